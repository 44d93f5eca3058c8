package agent_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/detour-dev/detour/agent"
	"github.com/detour-dev/detour/tunnel"
)

// The HTTP/1.1 connection loop (httpconn.go) proxies requests to an app
// (and local processes) speaking HTTP/1.1 only; these tests speak to it
// on raw connections, to see the bytes it writes.

// h1App serves h on an HTTP/1.1-only server (no h2c: the agent probes it
// as HTTP/1.1 and its loop proxies it). conns counts the connections it
// accepted. mutate may set the server's timeouts.
func h1App(t *testing.T, h http.Handler, mutate func(*http.Server)) (net.Listener, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := new(atomic.Int32)
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols), ReadHeaderTimeout: 5 * time.Second,
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		}}
	srv.Protocols.SetHTTP1(true)
	if mutate != nil {
		mutate(srv)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln, conns
}

// startH1Agent runs an agent in front of an HTTP/1.1 app serving h, with
// alice's http intercept (x-dev: alice, to an HTTP/1.1 process answering
// "alice" and the body it got) on its port, so that every connection goes
// through the router. mutate applies to both servers.
func startH1Agent(t *testing.T, h http.Handler, mutate func(*http.Server)) (w *world, appConns *atomic.Int32) {
	t.Helper()
	app, appConns := h1App(t, h, mutate)
	w = startAgent(t, func(c *agent.Config) {
		c.Listeners = []agent.PortMap{{Listen: freePort(t), App: uint16(app.Addr().(*net.TCPAddr).Port)}}
	})
	local, _ := h1App(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, "alice"+string(b))
	}), mutate)
	alice, _ := openClient(t, w, "alice@laptop", tunnel.Config{})
	if err := httpIntercept(t, alice, "web", w.appPort, local, "x-dev=alice"); err != nil {
		t.Fatal(err)
	}
	return w, appConns
}

// rawConn dials the agent's front with a deadline.
func rawConn(t *testing.T, w *world) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", w.front, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

// rawExchange writes raw and reads one response for method.
func rawExchange(t *testing.T, c net.Conn, br *bufio.Reader, method, raw string) (*http.Response, string) {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%q: body: %v", raw, err)
	}
	return res, string(b)
}

func TestHTTP1LoopKeepsAndRenewsUpstreamConnections(t *testing.T) {
	// The app closes connections idle for 100 ms, as apps with short
	// keep-alive timeouts do: a request on a connection it closed is sent
	// again on a new one (GET), or not sent on it at all (POST).
	w, conns := startH1Agent(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "app %s %s %q", r.Method, r.URL.Path, b)
	}), func(s *http.Server) { s.IdleTimeout = 100 * time.Millisecond })
	c, br := rawConn(t, w)
	base := conns.Load() // the agent's protocol probe
	for i := range 5 {
		path := fmt.Sprintf("/%d", i)
		if res, body := rawExchange(t, c, br, "GET", "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); res.StatusCode != 200 || body != `app GET `+path+` ""` {
			t.Fatalf("GET %s: %d %q", path, res.StatusCode, body)
		}
	}
	if n := conns.Load() - base; n != 1 {
		t.Errorf("5 requests in a row on one connection took %d app connections, want 1", n)
	}
	for _, raw := range []string{
		// alice's process, through her tunnel: its stream is closed when
		// the process closes the connection behind it.
		"GET /after-idle HTTP/1.1\r\nHost: x\r\nX-Dev: alice\r\n\r\n",
		"POST /after-idle HTTP/1.1\r\nHost: x\r\nX-Dev: alice\r\nContent-Length: 4\r\n\r\nbody",
		"GET /after-idle HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /after-idle HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody",
		"POST /after-idle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n",
		"GET /after-idle HTTP/1.1\r\nHost: x\r\nX-Dev: alice\r\n\r\n",
	} {
		time.Sleep(300 * time.Millisecond) // the app closes its idle connection
		method, _, _ := strings.Cut(raw, " ")
		want := `app ` + method + ` /after-idle ""`
		switch {
		case strings.Contains(raw, "alice") && method == "POST":
			want = "alicebody"
		case strings.Contains(raw, "alice"):
			want = "alice"
		case method == "POST":
			want = `app POST /after-idle "body"`
		}
		if res, body := rawExchange(t, c, br, method, raw); res.StatusCode != 200 || body != want {
			t.Errorf("%q after the app closed the idle connection: %d %q, want 200 %q", raw, res.StatusCode, body, want)
		}
	}
}

func TestHTTP1LoopStreamsAndFramesResponses(t *testing.T) {
	release := make(chan struct{})
	w, _ := startH1Agent(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stream": // a body of unknown length, the second part only once the first arrived
			io.WriteString(w, "first")
			w.(http.Flusher).Flush()
			<-release
			io.WriteString(w, "second")
		case "/trailer":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "body")
			w.Header().Set("X-Sum", "42")
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		default:
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		}
	}), nil)
	c, br := rawConn(t, w)
	io.WriteString(c, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 5)
	if _, err := io.ReadFull(res.Body, first); err != nil || string(first) != "first" {
		t.Fatalf("first part of a streamed response: %q, %v (held back until the end?)", first, err)
	}
	close(release)
	if rest, err := io.ReadAll(res.Body); err != nil || string(rest) != "second" || res.TransferEncoding[0] != "chunked" {
		t.Fatalf("rest: %q, %v, %v", rest, err, res.TransferEncoding)
	}

	res, body := rawExchange(t, c, br, "GET", "GET /trailer HTTP/1.1\r\nHost: x\r\n\r\n")
	if body != "body" || res.Trailer.Get("X-Sum") != "42" {
		t.Errorf("trailer: body %q, trailer %v", body, res.Trailer)
	}
	res, body = rawExchange(t, c, br, "HEAD", "HEAD /len HTTP/1.1\r\nHost: x\r\n\r\n")
	if res.StatusCode != 200 || body != "" || res.ContentLength != 5 {
		t.Errorf("HEAD: %d, body %q, Content-Length %d; want 200, none, 5", res.StatusCode, body, res.ContentLength)
	}
	res, body = rawExchange(t, c, br, "GET", "GET /empty HTTP/1.1\r\nHost: x\r\n\r\n")
	if res.StatusCode != 204 || body != "" {
		t.Errorf("204: %d %q", res.StatusCode, body)
	}
	res, body = rawExchange(t, c, br, "GET", "GET /len HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if body != "hello" || !res.Close {
		t.Errorf("Connection: close: body %q, close %v", body, res.Close)
	}
	if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("after Connection: close: %d bytes, %v; want EOF", n, err)
	}
}

func TestHTTP1LoopHandsOffWhatNetHTTPAnswers(t *testing.T) {
	w, _ := startH1Agent(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "app %s %s %s %q", r.Proto, r.Method, r.URL.Path, b)
	}), nil)
	for _, tc := range []struct {
		name, raw string
		status    int
		body      string // "" for any
	}{
		{"two Host lines", "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400, ""},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", 400, ""},
		{"malformed header", "GET / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n", 400, ""},
		{"HTTP/1.0", "GET /old HTTP/1.0\r\nHost: a\r\n\r\n", 200, `app HTTP/1.1 GET /old ""`},
		{"Expect: 100-continue", "POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi", 200, `app HTTP/1.1 POST /up "hi"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := rawConn(t, w)
			res, body := rawExchange(t, c, br, "GET", tc.raw)
			for res.StatusCode == 100 { // the app's, forwarded, and the agent's server's own
				res, body = rawExchange(t, c, br, "GET", "")
			}
			if res.StatusCode != tc.status || tc.body != "" && body != tc.body {
				t.Errorf("%d %q, want %d %q", res.StatusCode, body, tc.status, tc.body)
			}
		})
	}
	// Pipelined: the loop serves the first, hands the connection over at the
	// second (Expect), and net/http serves the rest, in order.
	c, br := rawConn(t, w)
	io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"+
		"POST /2 HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx"+
		"GET /3 HTTP/1.1\r\nHost: a\r\nx-dev: alice\r\n\r\n")
	for _, want := range []string{`app HTTP/1.1 GET /1 ""`, `app HTTP/1.1 POST /2 "x"`, "alice"} {
		res, body := rawExchange(t, c, br, "GET", "")
		for res.StatusCode == 100 {
			res, body = rawExchange(t, c, br, "GET", "")
		}
		if res.StatusCode != 200 || body != want {
			t.Errorf("pipelined: %d %q, want 200 %q", res.StatusCode, body, want)
		}
	}
}

func TestHTTP1LoopEarlyAnswerToAnUpload(t *testing.T) {
	// The app refuses an upload without reading it: the caller gets the
	// answer, and the connection ends (where the body ends is unknown).
	w, _ := startH1Agent(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	}), nil)
	c, br := rawConn(t, w)
	io.WriteString(c, "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("%v %v, want 413", res, err)
	}
	io.ReadAll(res.Body)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := br.ReadByte(); done <- err }()
	select {
	case err := <-done:
		if err != io.EOF {
			t.Errorf("after the early answer: %v, want EOF", err)
		}
	case <-ctx.Done():
		t.Fatal("connection neither closed nor answered after the early answer")
	}
}

func TestHTTP1LoopShutdownEndsRequestsInFlight(t *testing.T) {
	// A request the app never answers: the agent's shutdown closes the
	// connection after its grace period (2 s here), and with it the
	// request to the app, rather than waiting for the app (10 s, the
	// backstop of this test).
	start := time.Now()
	t.Run("agent", func(t *testing.T) {
		backstop := time.After(10 * time.Second)
		arrived := make(chan struct{})
		w, _ := startH1Agent(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/never" {
				return // the agent's protocol probe
			}
			close(arrived)
			select {
			case <-backstop:
			case <-r.Context().Done():
			}
		}), nil)
		c, _ := rawConn(t, w)
		io.WriteString(c, "GET /never HTTP/1.1\r\nHost: a\r\n\r\n")
		<-arrived
	}) // the cleanups stop the agent, then the app
	if took := time.Since(start); took > 6*time.Second {
		t.Errorf("the agent took %s to stop with a request in flight, want its 2 s grace and little more", took)
	}
}
