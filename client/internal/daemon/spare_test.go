package daemon

import (
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

type fakeSession struct {
	done   chan struct{}
	closed atomic.Int32
}

func newFakeSession() *fakeSession { return &fakeSession{done: make(chan struct{})} }

func (f *fakeSession) Close() error {
	if f.closed.Add(1) == 1 {
		close(f.done)
	}
	return nil
}

func (f *fakeSession) Done() <-chan struct{} { return f.done }

func (f *fakeSession) lose() { f.Close() }

func (f *fakeSession) isClosed() bool { return f.closed.Load() > 0 }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5 s: %s", what)
		}
	}
}

// TestSpares: a spare goes to the next intercept of its key only, once;
// it is closed when its time is up, when it is lost (and then never
// handed out), when the daemon stops, and at once when spares are off.
func TestSpares(t *testing.T) {
	a := spareKey{config: "c", namespace: "ns", pod: "p1", user: "alice"}
	for _, other := range []spareKey{
		{config: "c", namespace: "ns", pod: "p2", user: "alice"},
		{config: "c", namespace: "ns", pod: "p1", user: "bob"},
		{config: "other credentials", namespace: "ns", pod: "p1", user: "alice"},
		{config: "c", namespace: "ns2", pod: "p1", user: "alice"},
	} {
		s := newSpares[*fakeSession](time.Minute)
		f := newFakeSession()
		s.put(a, f)
		if got := s.take(other); got != nil {
			t.Errorf("%+v took %+v's spare", other, a)
		}
		if got := s.take(a); got != f || f.isClosed() {
			t.Errorf("take: %v (closed %v), want the spare, open", got, f.isClosed())
		}
		if got := s.take(a); got != nil {
			t.Errorf("a spare was handed out twice")
		}
	}

	s := newSpares[*fakeSession](50 * time.Millisecond)
	f := newFakeSession()
	s.put(a, f)
	waitFor(t, "the spare closed after its linger", f.isClosed)
	if s.take(a) != nil || s.count() != 0 {
		t.Errorf("an expired spare was kept")
	}

	s = newSpares[*fakeSession](time.Minute)
	f = newFakeSession()
	s.put(a, f)
	f.lose()
	waitFor(t, "a lost spare forgotten", func() bool { return s.count() == 0 })
	if s.take(a) != nil {
		t.Errorf("a lost spare was handed out")
	}

	f, g := newFakeSession(), newFakeSession()
	s.put(a, f)
	s.put(a, g) // one per key: the second is closed
	if !g.isClosed() || f.isClosed() {
		t.Errorf("second spare for one key: first closed %v, second closed %v; want false, true", f.isClosed(), g.isClosed())
	}
	s.closeAll()
	if !f.isClosed() || s.count() != 0 {
		t.Errorf("closeAll left a spare open")
	}
	h := newFakeSession()
	s.put(a, h)
	if !h.isClosed() {
		t.Errorf("a spare was kept after closeAll")
	}

	off := newSpares[*fakeSession](0)
	f = newFakeSession()
	off.put(a, f)
	if !f.isClosed() || off.take(a) != nil {
		t.Errorf("with linger 0 a spare was kept")
	}
	var none *spares[*fakeSession]
	f = newFakeSession()
	none.put(a, f)
	if !f.isClosed() || none.take(a) != nil {
		t.Errorf("nil spares kept a session")
	}
}

// TestConfigKey: credentials that differ give different keys; the same
// configuration the same key.
func TestConfigKey(t *testing.T) {
	base := func() *rest.Config {
		return &rest.Config{Host: "https://10.0.0.1:6443", BearerToken: "t1"}
	}
	same := configKey(base())
	if configKey(base()) != same {
		t.Fatal("one configuration, two keys")
	}
	for name, change := range map[string]func(*rest.Config){
		"host":        func(c *rest.Config) { c.Host = "https://10.0.0.2:6443" },
		"token":       func(c *rest.Config) { c.BearerToken = "t2" },
		"client cert": func(c *rest.Config) { c.CertData = []byte("cert") },
		"impersonate": func(c *rest.Config) { c.Impersonate.UserName = "bob" },
		"group":       func(c *rest.Config) { c.Impersonate.Groups = []string{"admins"} },
		"exec plugin": func(c *rest.Config) {
			c.ExecProvider = &clientcmdapi.ExecConfig{Command: "aws", Args: []string{"eks", "get-token"}}
		},
	} {
		c := base()
		change(c)
		if configKey(c) == same {
			t.Errorf("%s changed, the key did not", name)
		}
	}
}
