//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/detour-dev/detour/tests/internal/images"
)

// copyRecorder is a mirror's local process on 127.0.0.1: it records the
// requests it gets as "METHOD PATH BODY" and answers them; stall makes it
// hold every request until unstalled.
type copyRecorder struct {
	port int
	mu   sync.Mutex
	got  map[string]int
	gate chan struct{} // nil: answer at once
}

func newCopyRecorder(t *testing.T) *copyRecorder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cr := &copyRecorder{port: ln.Addr().(*net.TCPAddr).Port, got: map[string]int{}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cr.mu.Lock()
		gate := cr.gate
		cr.mu.Unlock()
		if gate != nil {
			<-gate
		}
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/detour-http2-check" || r.Method == "PRI" {
			return // the agent's probes of the local process
		}
		cr.mu.Lock()
		cr.got[strings.TrimSpace(r.Method+" "+r.URL.Path+" "+string(body))]++
		cr.mu.Unlock()
		fmt.Fprintln(w, "a mirror's answer, thrown away")
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { cr.stall(false); srv.Close() })
	return cr
}

func (cr *copyRecorder) stall(on bool) {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	switch {
	case on && cr.gate == nil:
		cr.gate = make(chan struct{})
	case !on && cr.gate != nil:
		close(cr.gate)
		cr.gate = nil
	}
}

func (cr *copyRecorder) has(req string) bool {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	return cr.got[req] > 0
}

type mirrorStatus struct {
	Intercepts []struct {
		Name      string `json:"name"`
		Mechanism string `json:"mechanism"`
		Mirror    *struct {
			Copied  uint64 `json:"copied"`
			Dropped uint64 `json:"dropped"`
		} `json:"mirror"`
	} `json:"intercepts"`
}

// TestMirrors: on the real cluster, two developers mirror the same Service
// port of a 2-replica Deployment while a third holds a personal intercept
// on it. Every request is answered by the app, or by the interceptor for
// hers; each mirror's local server gets a copy of each request, the
// intercepted one included. When one mirror's local server stalls, the
// app's answers do not slow down, and whole copies are dropped and shown
// in that developer's detour status.
func TestMirrors(t *testing.T) {
	ctx := context.Background()
	cs := clientset(t, restConfig(t))
	alice, bob, carol := newUser(t), newUser(t), newUser(t)
	alice.must("install", "--image", images.Detour)

	ns := createNamespace(ctx, t, cs, "mirror")
	svc := deployWeb(ctx, t, cs, ns, "web", 2)
	base := fmt.Sprintf("http://%s:80", svc.Spec.ClusterIP)
	isApp := func(s string) bool { return strings.HasPrefix(s, "hello from web-") }
	eventually(t, time.Minute, "the Service answers before any intercept", func() bool { return isApp(who(base + "/")) })

	carol.must("intercept", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", localServer(t, "carol-workstation")), "--http-match", "x-dev=carol")
	alices, bobs := newCopyRecorder(t), newCopyRecorder(t)
	r := alice.must("intercept", "tap", "--workload", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", alices.port), "--mirror", "--mechanism", "http")
	if !strings.Contains(r.stdout, "mechanism:  http-mirror (a copy of every request") {
		t.Fatalf("alice's summary does not say she mirrors every request:\n%s", r)
	}
	bob.must("intercept", "tap", "--workload", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", bobs.port), "--mirror", "--http-path-prefix", "/")

	t.Run("answers as without mirrors; each mirror gets a copy of each request", func(t *testing.T) {
		steadily(t, "carol's header", 10, kubeProxyLag, func() string { return ask(base+"/carol", "x-dev", "carol") }, func(s string) bool { return s == "carol-workstation" })
		steadily(t, "no header", 10, kubeProxyLag, func() string { return ask(base + "/app") }, isApp)
		if got := askWith(http.MethodPost, base+"/orders", "x-dev", "carol"); got != "carol-workstation" {
			t.Fatalf("carol's POST answered %q", got)
		}
		if got := askWith(http.MethodPost, base+"/orders"); got != "posted" {
			t.Fatalf("a POST the app echoes answered %q", got)
		}
		for _, want := range []string{"GET /carol", "GET /app", "POST /orders posted"} {
			for who, cr := range map[string]*copyRecorder{"alice": alices, "bob": bobs} {
				eventually(t, 20*time.Second, who+"'s local server gets a copy of "+want, func() bool { return cr.has(want) })
			}
		}
	})

	t.Run("a stalled local server: the app answers at once, whole copies are dropped and counted", func(t *testing.T) {
		bobs.stall(true)
		const requests = 400
		var wg sync.WaitGroup
		var mu sync.Mutex
		var slowest time.Duration
		var wrong []string
		sem := make(chan struct{}, 16)
		for i := range requests {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				start := time.Now()
				got := ask(fmt.Sprintf("%s/flood/%d", base, i))
				took := time.Since(start)
				mu.Lock()
				defer mu.Unlock()
				slowest = max(slowest, took)
				if !isApp(got) {
					wrong = append(wrong, got)
				}
			}()
		}
		wg.Wait()
		t.Logf("%d requests while bob's local server stalled: slowest answer %s", requests, slowest.Round(time.Millisecond))
		if len(wrong) > 0 || slowest > 3*time.Second {
			t.Fatalf("answers changed or slowed by a stalled mirror: slowest %s, %d wrong (first %q)", slowest, len(wrong), wrong)
		}
		var st mirrorStatus
		eventually(t, 30*time.Second, "bob's status counts dropped copies", func() bool {
			out := bob.must("status", "-o", "json").stdout
			if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Intercepts) != 1 || st.Intercepts[0].Mirror == nil {
				t.Fatalf("status -o json: %v\n%s", err, out)
			}
			return st.Intercepts[0].Mirror.Dropped > 0
		})
		m := st.Intercepts[0].Mirror
		t.Logf("bob's mirror while stalled: %d copied, %d dropped", m.Copied, m.Dropped)
		if table := bob.must("status").stdout; !strings.Contains(table, "copies: ") || !strings.Contains(table, "a copy of requests path prefix /") {
			t.Fatalf("bob's status table lacks the mirror's counts or rules:\n%s", table)
		}
		bobs.stall(false)
		steadily(t, "carol's requests still hers", 5, kubeProxyLag, func() string { return ask(base+"/carol", "x-dev", "carol") }, func(s string) bool { return s == "carol-workstation" })
	})

	t.Run("leave: the mirror's copies stop, the intercept holds", func(t *testing.T) {
		alice.must("leave", "tap")
		bob.must("leave", "tap")
		steadily(t, "carol's header", 5, kubeProxyLag, func() string { return ask(base+"/carol", "x-dev", "carol") }, func(s string) bool { return s == "carol-workstation" })
		ask(base + "/after-leave")
		time.Sleep(time.Second)
		if alices.has("GET /after-leave") {
			t.Fatal("alice's local server got a copy after she left")
		}
	})
}
