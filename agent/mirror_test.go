package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/tunnel"
)

// copyServer is a mirror's local process: it records every request it
// gets, whole (method, path, x-dev, body), and answers 200. While gate is
// not nil it waits for gate to close before reading anything.
type copyServer struct {
	ln   net.Listener
	mu   sync.Mutex
	got  []string
	gate chan struct{}
}

func newCopyServer(t *testing.T, stalled bool) *copyServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cs := &copyServer{ln: ln}
	if stalled {
		cs.gate = make(chan struct{})
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cs.mu.Lock()
		gate := cs.gate // release sets it to nil
		cs.mu.Unlock()
		if gate != nil {
			<-gate
		}
		body, err := io.ReadAll(r.Body)
		if err != nil || r.URL.Path == "/detour-http2-check" {
			return // the agent's probe; and a copy is whole or nothing
		}
		cs.mu.Lock()
		cs.got = append(cs.got, fmt.Sprintf("%s %s %s %s", r.Method, r.URL.RequestURI(), r.Header.Get("X-Dev"), body))
		cs.mu.Unlock()
		fmt.Fprint(w, "the workstation's answer, thrown away")
	}), Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	t.Cleanup(func() {
		cs.release()
		srv.Close()
	})
	return cs
}

func (cs *copyServer) release() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.gate != nil {
		close(cs.gate)
		cs.gate = nil
	}
}

func (cs *copyServer) received() []string {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return append([]string(nil), cs.got...)
}

func mirror(t *testing.T, s *client.Session, name, mechanism string, port uint16, local net.Listener, args map[string][]string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := s.CreateIntercept(ctx, client.InterceptSpec{Name: name, Port: port, Mechanism: mechanism, LocalAddr: local.Addr().String(), Args: args})
	return err
}

// counts is a mirror's copied and dropped, as its holder's list shows them.
func counts(t *testing.T, s *client.Session, name string) (copied, dropped uint64) {
	t.Helper()
	list, err := s.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, ic := range list {
		if ic.Name == name && ic.Yours {
			return ic.MirrorCopied, ic.MirrorDropped
		}
	}
	t.Fatalf("no mirror %q in %+v", name, list)
	return 0, 0
}

// TestHTTPMirrorsBesideAPersonalIntercept: two developers mirror a port
// that a third intercepts with her header. Every request is answered by
// the app, or by alice for hers; each mirror gets a copy of each request
// its rules match (headers and body, whoever answered it).
func TestHTTPMirrorsBesideAPersonalIntercept(t *testing.T) {
	w := startHTTPAgent(t)
	alice, _ := openClient(t, w, "alice@laptop", tunnel.Config{})
	bob, _ := openClient(t, w, "bob@desk", tunnel.Config{})
	carol, _ := openClient(t, w, "carol@home", tunnel.Config{})
	if err := httpIntercept(t, alice, "web", w.appPort, nameServer(t, "alice"), "x-dev=alice"); err != nil {
		t.Fatal(err)
	}
	bobs, carols := newCopyServer(t, false), newCopyServer(t, false)
	if err := mirror(t, bob, "tap", tunnel.MechanismHTTPMirror, w.appPort, bobs.ln, nil); err != nil {
		t.Fatal(err)
	}
	if err := mirror(t, carol, "tap", tunnel.MechanismHTTPMirror, w.appPort, carols.ln, map[string][]string{tunnel.ArgPathPrefix: {"/api/"}, tunnel.ArgMethod: {"POST"}}); err != nil {
		t.Fatal(err)
	}
	h1 := &http.Transport{}
	defer h1.CloseIdleConnections()
	base := "http://" + w.front
	for _, r := range []struct{ method, path, body, dev, answer string }{
		{"GET", "/", "", "", "app"},
		{"POST", "/api/orders?n=1", `{"item":1}`, "", "app"},
		{"POST", "/api/orders", `{"item":2}`, "alice", "alice"},
		{"GET", "/api/orders", "", "alice", "alice"},
	} {
		if got := send(t, h1, r.method, base+r.path, r.body, "x-dev", r.dev); got != r.answer {
			t.Fatalf("%s %s (x-dev %q): answered by %q, want %q", r.method, r.path, r.dev, got, r.answer)
		}
	}
	wantBob := []string{"GET /  ", `POST /api/orders?n=1  {"item":1}`, `POST /api/orders alice {"item":2}`, "GET /api/orders alice "}
	wantCarol := []string{`POST /api/orders?n=1  {"item":1}`, `POST /api/orders alice {"item":2}`}
	eventually(t, 5*time.Second, "each mirror got its copies", func() bool {
		return len(bobs.received()) == len(wantBob) && len(carols.received()) == len(wantCarol)
	})
	for who, c := range map[string]struct {
		got, want []string
	}{"bob": {bobs.received(), wantBob}, "carol": {carols.received(), wantCarol}} {
		if !sameSet(c.got, c.want) {
			t.Errorf("%s's copies: %q, want %q", who, c.got, c.want)
		}
	}
	eventually(t, 5*time.Second, "bob's counts: 4 copied, 0 dropped", func() bool {
		copied, dropped := counts(t, bob, "tap") // counted once the answer was read
		return copied == 4 && dropped == 0
	})
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	left := map[string]int{}
	for _, s := range a {
		left[s]++
	}
	for _, s := range b {
		left[s]--
	}
	for _, n := range left {
		if n != 0 {
			return false
		}
	}
	return true
}

// TestHTTPMirrorOfASlowWorkstationDropsWholeRequests: bob's local process
// stalls. The app answers every request at once all the same; the copies
// that do not fit the mirror's queue are dropped and counted, and every
// request is accounted for once (copied or dropped) — the ones that do
// arrive, once he is back, arrive whole. A body over the bound is never
// copied.
func TestHTTPMirrorOfASlowWorkstationDropsWholeRequests(t *testing.T) {
	w := startHTTPAgent(t)
	bob, _ := openClient(t, w, "bob@desk", tunnel.Config{})
	bobs := newCopyServer(t, true)
	if err := mirror(t, bob, "tap", tunnel.MechanismHTTPMirror, w.appPort, bobs.ln, nil); err != nil {
		t.Fatal(err)
	}
	h1 := &http.Transport{MaxIdleConnsPerHost: 16}
	defer h1.CloseIdleConnections()
	const requests = 200
	var wg sync.WaitGroup
	slow := make(chan string, requests)
	for i := range requests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			body := fmt.Sprintf("request-%03d-%s", i, strings.Repeat("x", 1000))
			if got := send(t, h1, "POST", fmt.Sprintf("http://%s/r/%d", w.front, i), body); got != "app" {
				slow <- "answered by " + got
			} else if took := time.Since(start); took > 3*time.Second {
				slow <- fmt.Sprintf("answered after %s", took)
			}
		}()
		if i%16 == 15 {
			wg.Wait()
		}
	}
	wg.Wait()
	close(slow)
	for s := range slow {
		t.Fatalf("a request waited for the stalled mirror: %s", s)
	}
	big := strings.Repeat("b", tunnel.MaxMirrorBody+1)
	if got := send(t, h1, "POST", "http://"+w.front+"/big", big); got != "app" {
		t.Fatalf("a body over the bound: answered by %q", got)
	}
	_, dropped := counts(t, bob, "tap")
	if dropped == 0 {
		t.Fatalf("no copy dropped while the workstation stalled")
	}
	bobs.release()
	eventually(t, 15*time.Second, "every request copied or dropped", func() bool {
		copied, dropped := counts(t, bob, "tap")
		return copied+dropped == requests+1
	})
	copied, dropped := counts(t, bob, "tap")
	got := bobs.received()
	if uint64(len(got)) != copied {
		t.Fatalf("%d copies received, %d counted as copied", len(got), copied)
	}
	for _, g := range got {
		var i int
		var body string
		if _, err := fmt.Sscanf(g, "POST /r/%d  %s", &i, &body); err != nil || body != fmt.Sprintf("request-%03d-%s", i, strings.Repeat("x", 1000)) {
			t.Fatalf("a copy that is not a whole request: %.60q", g)
		}
	}
	t.Logf("stalled workstation: %d of %d requests copied, %d dropped", copied, requests+1, dropped)
}

// tapServer is a tcp-mirror's local process: it records each connection's
// bytes and how it ended (EOF, or a reset). While stalled it reads nothing.
type tapServer struct {
	ln    net.Listener
	conns chan tapped
	gate  chan struct{}
}

type tapped struct {
	data  []byte
	reset bool
}

func newTapServer(t *testing.T, stalled bool) *tapServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &tapServer{ln: ln, conns: make(chan tapped, 16), gate: make(chan struct{})}
	if !stalled {
		close(ts.gate)
	}
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				<-ts.gate
				data, err := io.ReadAll(c)
				_, werr := fmt.Fprintln(c, "the workstation's answer, thrown away")
				ts.conns <- tapped{data: data, reset: errors.Is(err, syscall.ECONNRESET) || errors.Is(werr, syscall.ECONNRESET)}
			}()
		}
	}()
	t.Cleanup(func() {
		select {
		case <-ts.gate:
		default:
			close(ts.gate)
		}
		ln.Close()
		wg.Wait()
	})
	return ts
}

func (ts *tapServer) next(t *testing.T) tapped {
	t.Helper()
	select {
	case c := <-ts.conns:
		return c
	case <-time.After(20 * time.Second):
		t.Fatal("no mirrored connection reached the local process")
		return tapped{}
	}
}

// exchange sends data on a connection to addr, half-closes it and returns
// what came back (the app's line and its echo).
func exchange(t *testing.T, addr string, data []byte) []byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		c.(*net.TCPConn).CloseWrite()
		errc <- err
	}()
	back, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return back
}

// TestTCPMirrorCopiesWholeConnectionsOrCutsThem: two developers mirror a
// port's connections while the app answers them. A mirror that keeps up
// gets every byte each client sent, then EOF; one that stalls has its copy
// cut off — its local process sees a prefix of the bytes, without a hole,
// then a reset, never an EOF that would pass it for whole — and the
// connection counts as dropped. The app's answer is whole either way.
func TestTCPMirrorCopiesWholeConnectionsOrCutsThem(t *testing.T) {
	w := startAgent(t, nil)
	bob, _ := openClient(t, w, "bob@desk", tunnel.Config{})
	carol, _ := openClient(t, w, "carol@home", tunnel.Config{})
	bobs, carols := newTapServer(t, false), newTapServer(t, true)
	if err := mirror(t, bob, "tap", tunnel.MechanismTCPMirror, w.appPort, bobs.ln, nil); err != nil {
		t.Fatal(err)
	}
	check := func(who string, got tapped, want []byte) {
		t.Helper()
		if got.reset || !bytes.Equal(got.data, want) {
			t.Fatalf("%s's copy: %d bytes (reset %v), want all %d then EOF", who, len(got.data), got.reset, len(want))
		}
	}
	// A: within every bound: whole.
	a := make([]byte, 512<<10)
	_, _ = rand.Read(a)
	if back := exchange(t, w.front, a); !bytes.Equal(back, append([]byte("app\n"), a...)) {
		t.Fatalf("the app's answer to A: %d bytes, want %d", len(back), len(a)+4)
	}
	check("bob", bobs.next(t), a)
	if err := mirror(t, carol, "tap", tunnel.MechanismTCPMirror, w.appPort, carols.ln, nil); err != nil {
		t.Fatal(err)
	}
	// B: more than stalled carol's stream window, socket buffers and
	// queue hold: her copy is cut; the app answers it whole all the same.
	b := make([]byte, 48<<20)
	_, _ = rand.Read(b)
	if back := exchange(t, w.front, b); !bytes.Equal(back, append([]byte("app\n"), b...)) {
		t.Fatalf("the app's answer to B: %d bytes, want %d: a mirror changed it", len(back), len(b)+4)
	}
	eventually(t, 20*time.Second, "carol's copy of B counted as dropped", func() bool {
		_, dropped := counts(t, carol, "tap")
		return dropped == 1
	})
	close(carols.gate)
	got := carols.next(t)
	if !got.reset || len(got.data) >= len(b) || !bytes.Equal(got.data, b[:len(got.data)]) {
		t.Fatalf("carol's cut copy: %d bytes (reset %v): want a prefix of the %d sent, then a reset", len(got.data), got.reset, len(b))
	}
	t.Logf("carol's cut copy of B: %d of %d bytes", len(got.data), len(b))
	<-bobs.conns // bob's copy of B: whole or cut, as his tunnel kept pace
	// C: after the cut, carol's connections are copied whole again.
	c := []byte("GET / HTTP/1.0\r\n\r\n")
	exchange(t, w.front, c)
	check("carol", carols.next(t), c)
	eventually(t, 5*time.Second, "carol's counts: 1 copied, 1 dropped", func() bool {
		copied, dropped := counts(t, carol, "tap")
		return copied == 1 && dropped == 1
	})
}
