package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/detour-dev/detour/agent"
	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/tunnel"
)

// These tests speak raw bytes to the HTTP/1.1 connection loop
// (httpconn.go) as a hostile caller in the cluster could, and put raw
// backends behind it: what a backend frames must be what the agent
// routed, and one caller's answer must not reach another.

// rawH1App is an HTTP/1.1 backend written by hand: it reads each request
// with http.ReadRequest (its body read whole) and writes what answer
// returns for it, raw (see lateMark, closeMark). heads keeps each request
// head as it came.
type rawH1App struct {
	ln     net.Listener
	mu     sync.Mutex
	heads  []string
	bodies []string
}

func startRawH1App(t *testing.T, answer func(*http.Request) string) *rawH1App {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	a := &rawH1App{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go a.serve(c, answer)
		}
	}()
	return a
}

func (a *rawH1App) serve(c net.Conn, answer func(*http.Request) string) {
	defer c.Close()
	var rec bytes.Buffer
	br := bufio.NewReader(io.TeeReader(c, &rec))
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		head := rec.Bytes()
		if i := bytes.Index(head, []byte("\r\n\r\n")); i >= 0 {
			head = head[:i+4]
		}
		b, _ := io.ReadAll(req.Body)
		rec.Reset()
		rec.Write(bufferedRest(br))
		if req.Method == "PRI" || req.URL.Path == "/detour-http2-check" { // the agent's protocol probe
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			return
		}
		a.mu.Lock()
		a.heads, a.bodies = append(a.heads, string(head)), append(a.bodies, string(b))
		a.mu.Unlock()
		ans, closing := strings.CutSuffix(answer(req), closeMark)
		ans, tunnel := strings.CutSuffix(ans, tunnelMark)
		now, later, _ := strings.Cut(ans, lateMark)
		if _, err := io.WriteString(c, now); err != nil {
			return
		}
		if later != "" {
			time.Sleep(50 * time.Millisecond)
			io.WriteString(c, later)
		}
		if closing {
			return
		}
		if tunnel { // what comes next goes to the tunnel's far end, which answers anything
			for {
				if _, err := br.ReadByte(); err != nil {
					return
				}
				br.Discard(br.Buffered())
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\ntunnel")
			}
		}
	}
}

// lateMark in an answer: the app writes what follows 50 ms later;
// closeMark ending it: the app then closes the connection; tunnelMark:
// the connection then is a CONNECT tunnel, whose far end answers
// "tunnel" to whatever comes.
const (
	lateMark   = "\x00later\x00"
	closeMark  = "\x00close\x00"
	tunnelMark = "\x00tunnel\x00"
)

// bufferedRest is what br read past the request, still in its buffer.
func bufferedRest(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return b
}

func (a *rawH1App) port() uint16 { return uint16(a.ln.Addr().(*net.TCPAddr).Port) }

func (a *rawH1App) seen() (heads, bodies []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.heads...), append([]string(nil), a.bodies...)
}

// startRawAgent runs an agent in front of app with alice's intercept
// (x-dev: alice) to local.
func startRawAgent(t *testing.T, app, local *rawH1App) *world {
	t.Helper()
	w := startAgent(t, func(c *agent.Config) {
		c.Listeners = []agent.PortMap{{Listen: freePort(t), App: app.port()}}
	})
	alice, _ := openClient(t, w, "alice@laptop", tunnel.Config{})
	if err := httpIntercept(t, alice, "web", w.appPort, local.ln, "x-dev=alice"); err != nil {
		t.Fatal(err)
	}
	return w
}

// okAnswer answers "<name> <path>" with its length.
func okAnswer(name string) func(*http.Request) string {
	return func(r *http.Request) string {
		body := name + " " + r.URL.Path
		return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}
}

func TestHTTP1LoopDoesNotPoolAConnectionWithBytesPastTheResponse(t *testing.T) {
	// The backend (the app, or alice's process through her tunnel) answers
	// some requests with more than the response it frames: bytes past a
	// Content-Length or a chunked body, a body after a 204, 304 or a
	// HEAD's answer, the extra sent with the answer or a little later. Its
	// connection must not be reused by the next caller, who would get
	// those bytes as its own answer ("stolen").
	const stolen = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstolen"
	extra := func(name string) func(*http.Request) string {
		return func(r *http.Request) string {
			switch r.URL.Path {
			case "/long":
				return "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" + stolen
			case "/204":
				return "HTTP/1.1 204 No Content\r\n\r\n" + stolen
			case "/304":
				return "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n" + stolen
			case "/head":
				return "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n" + stolen
			case "/late":
				return "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" + lateMark + stolen
			case "/chunked":
				return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + stolen
			}
			return okAnswer(name)(r)
		}
	}
	w := startRawAgent(t, startRawH1App(t, extra("app")), startRawH1App(t, extra("alice")))
	for _, to := range []struct{ name, field string }{{"app", ""}, {"alice", "X-Dev: alice\r\n"}} {
		for _, tc := range []struct{ method, path string }{
			{"GET", "/long"}, {"GET", "/204"}, {"GET", "/304"}, {"HEAD", "/head"}, {"GET", "/chunked"}, {"GET", "/late"},
		} {
			a, abr := rawConn(t, w)
			if res, _ := rawExchange(t, a, abr, tc.method, tc.method+" "+tc.path+" HTTP/1.1\r\nHost: x\r\n"+to.field+"\r\n"); res.StatusCode == 0 {
				t.Fatal("no answer")
			}
			time.Sleep(100 * time.Millisecond) // what comes late has come
			for _, next := range []string{"next caller", "same caller"} {
				c, cbr := a, abr
				if next == "next caller" {
					c, cbr = rawConn(t, w)
				}
				want := to.name + " /mine"
				if res, body := rawExchange(t, c, cbr, "GET", "GET /mine HTTP/1.1\r\nHost: x\r\n"+to.field+"\r\n"); body != want {
					t.Errorf("%s to %s after %s %s: %d %q, want %q", next, to.name, tc.method, tc.path, res.StatusCode, body, want)
				}
			}
		}
	}
}

func TestHTTP1LoopEndsAnUploadThatFails(t *testing.T) {
	// A request body the agent cannot pass on whole (the caller goes away
	// in the middle, or its chunked framing is one net/http refuses) must
	// end the backend's request too, as net/http's Transport does: else
	// the backend waits for the rest, and the agent for its answer, for
	// ever, each such request holding an app connection.
	var started, ended atomic.Int32 // requests the app took, and saw end
	got := make(chan error, 8)
	w, _ := startH1Agent(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/up" {
			return
		}
		started.Add(1)
		_, err := io.ReadAll(r.Body)
		ended.Add(1)
		got <- err
	}), nil)
	chunked := "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
	for _, tc := range []struct {
		name, raw string
		hangUp    bool // the caller closes after raw
	}{
		{"caller gone, Content-Length", "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nsome", true},
		{"caller gone, chunked", chunked + "4\r\nsome\r\n", true},
		{"chunk line ends with a bare LF", chunked + "4\r\nsome\r\n4\nmore\n0\n\n", false},
		{"chunk size line too long", chunked + "4\r\nsome\r\n" + strings.Repeat("0", 5000) + "4\r\nmore\r\n0\r\n\r\n", false},
		{"chunk size too large", chunked + "4\r\nsome\r\nfffffffffffffffffff\r\nmore\r\n0\r\n\r\n", false},
		{"tiny chunks with long extensions", chunked + "4\r\nsome\r\n" + strings.Repeat("1;"+strings.Repeat("e", 100)+"\r\nx\r\n", 400), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := rawConn(t, w)
			io.WriteString(c, tc.raw)
			if tc.hangUp {
				time.Sleep(50 * time.Millisecond)
				c.Close()
			} else {
				// the caller gets an answer (a 502 or the app's), or the
				// connection ends; it does not wait on
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := br.ReadByte(); err != nil && err != io.EOF {
					t.Errorf("caller: %v, want an answer or the connection closed", err)
				}
			}
			// The app got nothing (the agent refused the body before it
			// sent a byte of the request), or saw its request end.
			time.Sleep(200 * time.Millisecond)
			if started.Load() == ended.Load() && len(got) == 0 {
				return
			}
			select {
			case err := <-got:
				if err == nil {
					t.Errorf("the app read the body whole, want an error")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the app still waits for the rest of the body after 5 s")
			}
		})
	}
}

// wellFormedHead reports what is wrong with a request head as a backend
// got it: every line CRLF-ended, none folded.
func wellFormedHead(head string) string {
	for i := 0; i < len(head); i++ {
		if head[i] == '\n' && (i == 0 || head[i-1] != '\r') {
			return "a bare LF"
		}
		if head[i] == '\r' && (i+1 == len(head) || head[i+1] != '\n') {
			return "a bare CR"
		}
	}
	for _, line := range strings.Split(head, "\r\n") {
		if line != "" && (line[0] == ' ' || line[0] == '\t') {
			return "a folded line"
		}
	}
	return ""
}

func TestHTTP1LoopWritesHeadsItParsedLoosely(t *testing.T) {
	// Heads net/http reads but the loop's strict parser does not (bare
	// LF line ends, folded lines) reach the backend as the agent read
	// them: CRLF lines, one per field, only this request's fields. A
	// backend that reads them otherwise (a bare LF inside a value, the
	// next request's fields added to this one) would not see what the
	// agent routed.
	app := startRawH1App(t, okAnswer("app"))
	local := startRawH1App(t, okAnswer("alice"))
	w := startRawAgent(t, app, local)
	c, br := rawConn(t, w)
	// (after a first request: the rest of a first read is sniffed bytes)
	if _, body := rawExchange(t, c, br, "GET", "GET /0 HTTP/1.1\r\nHost: x\r\n\r\n"); body != "app /0" {
		t.Fatalf("first request: %q", body)
	}
	io.WriteString(c, "GET /a HTTP/1.1\nHost: x\nX-A: 1\n\n"+
		"GET /b HTTP/1.1\r\nHost: x\r\nX-Dev: alice\r\n\r\n"+
		"GET /c HTTP/1.1\r\nHost: x\r\nX-A: 1\nX-B: 2\r\n\r\n"+
		"GET /d HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n")
	for _, want := range []string{"app /a", "alice /b", "app /c", "app /d"} {
		if res, body := rawExchange(t, c, br, "GET", ""); body != want {
			t.Errorf("%d %q, want %q", res.StatusCode, body, want)
		}
	}
	appHeads, _ := app.seen()
	aliceHeads, _ := local.seen()
	for _, h := range append(appHeads, aliceHeads...) {
		if bad := wellFormedHead(h); bad != "" {
			t.Errorf("a backend got a head with %s: %q", bad, h)
		}
	}
	if len(appHeads) != 4 || len(aliceHeads) != 1 {
		t.Fatalf("app got %q, alice %q", appHeads, aliceHeads)
	}
	appHeads = appHeads[1:]
	for i, want := range []struct{ has, hasNot string }{
		{"\r\nX-A: 1\r\n", "X-Dev"},
		{"\r\nX-B: 2\r\n", ""},
		{"\r\nX-A: 1 folded\r\n", ""},
	} {
		if h := appHeads[i]; !strings.Contains(h, want.has) || want.hasNot != "" && strings.Contains(h, want.hasNot) {
			t.Errorf("the app got %q, want %q in it and no %q", h, want.has, want.hasNot)
		}
	}
}

// startShapesAgent runs an agent in front of a raw app with alice's
// intercept (x-dev: alice) and bob's (x-dev: bob, paths under /api/), to
// raw processes answering "NAME PATH".
func startShapesAgent(t *testing.T) (w *world, app, alice, bob *rawH1App) {
	t.Helper()
	app, alice, bob = startRawH1App(t, okAnswer("app")), startRawH1App(t, okAnswer("alice")), startRawH1App(t, okAnswer("bob"))
	w = startRawAgent(t, app, alice)
	bobS, _ := openClient(t, w, "bob@laptop", tunnel.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := bobS.CreateIntercept(ctx, client.InterceptSpec{
		Name: "api", Port: w.appPort, Mechanism: tunnel.MechanismHTTP, LocalAddr: bob.ln.Addr().String(),
		Args: tunnel.HTTPSettings{Match: parseRules(t, []string{"x-dev=bob"}), Path: tunnel.PathMatch{Kind: tunnel.ArgPathPrefix, Value: "/api/"}}.Args(),
	}); err != nil {
		t.Fatal(err)
	}
	return w, app, alice, bob
}

func TestHTTP1LoopRoutesAsNetHTTPDoes(t *testing.T) {
	// The same request, served by the loop (HTTP/1.1) and by the net/http
	// server it hands HTTP/1.0 to, goes to the same backend, which gets
	// the same path: one decision, whichever proxy takes it.
	w, _, _, _ := startShapesAgent(t)
	for _, tc := range []struct{ target, fields, want string }{
		{"/p", "x-DEV: alice\r\n", "alice /p"},
		{"/p", "X-Dev: Alice\r\n", "app /p"},
		{"/p", "X-Dev: \t alice \t\r\n", "alice /p"},
		{"/p", "X-Dev: bob\r\nX-Dev: alice\r\n", "alice /p"},
		{"/p", "X-Dev: bob, alice\r\n", "app /p"},
		{"/p", "X-Dev: bob\r\n alice\r\n", "app /p"},
		{"/p", "Connection: X-Dev\r\nX-Dev: alice\r\n", "alice /p"},
		{"http://other/api/x", "X-Dev: bob\r\n", "bob /api/x"},
		{"/api%2Fx", "X-Dev: bob\r\n", "bob /api/x"},
		{"/api/../admin", "X-Dev: bob\r\n", "bob /api/../admin"},
		{"/API/x", "X-Dev: bob\r\n", "app /API/x"},
		{"/admin", "X-Dev: bob\r\n", "app /admin"},
	} {
		for _, proto := range []string{"HTTP/1.1", "HTTP/1.0"} {
			c, br := rawConn(t, w)
			raw := "GET " + tc.target + " " + proto + "\r\nHost: x\r\n" + tc.fields + "\r\n"
			if res, body := rawExchange(t, c, br, "GET", raw); res.StatusCode != 200 || body != tc.want {
				t.Errorf("%q: %d %q, want %q", raw, res.StatusCode, body, tc.want)
			}
		}
	}
}

func TestHTTP1LoopSmugglingAndRoutingShapes(t *testing.T) {
	// Each raw input (on a connection of its own) and what each backend
	// must get: the request lines (with fields checked in the head), in
	// order. A request hidden in another's body reaches no backend as a
	// request; one the agent reads as a request is routed like any other.
	// The answers the caller reads are "CODE BODY" (a 4xx/5xx by its code
	// only, net/http's server answering what the loop hands over).
	w, app, alice, bob := startShapesAgent(t)
	const hidden = "GET /hidden HTTP/1.1\r\nHost: x\r\nX-Dev: alice\r\n\r\n"
	type got struct{ app, alice, bob []string } // "METHOD PATH" then fields the head must have (+) or not (-)
	for _, tc := range []struct {
		name, raw string
		answers   []string
		want      got
	}{
		// framing
		{"CL and TE: chunked wins, the backend gets chunked only",
			"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + hidden,
			[]string{"200 app /p", "200 alice /hidden"}, got{app: []string{"POST /p", "+Transfer-Encoding: chunked", "-Content-Length"}, alice: []string{"GET /hidden"}}},
		{"TE and a short CL: the chunk holds the hidden request, as a body",
			"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n2f\r\n" + hidden + "\r\n0\r\n\r\n",
			[]string{"200 app /p"}, got{app: []string{"POST /p", "-Content-Length", "=" + hidden}}},
		{"two Content-Lengths", "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 52\r\n\r\n" + hidden, []string{"400"}, got{}},
		{"Content-Length list", "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 0, 52\r\n\r\n" + hidden, []string{"400"}, got{}},
		{"signed Content-Length", "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: +0\r\n\r\n" + hidden, []string{"400"}, got{}},
		{"chunked, identity", "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + hidden, []string{"501"}, got{}},
		{"xchunked", "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\nContent-Length: 0\r\n\r\n" + hidden, []string{"501"}, got{}},
		{"two Transfer-Encodings", "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + hidden, []string{"501"}, got{}},
		{"space before the colon", "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + hidden, []string{"400"}, got{}},
		{"folded Transfer-Encoding", "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + hidden,
			[]string{"200 app /p", "200 alice /hidden"}, got{app: []string{"POST /p", "+Transfer-Encoding: chunked"}, alice: []string{"GET /hidden"}}},
		{"chunk extensions", "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;x=\"a;b\"\r\nabc\r\n0;y\r\n\r\n" + hidden,
			[]string{"200 app /p", "200 alice /hidden"}, got{app: []string{"POST /p", "=abc"}, alice: []string{"GET /hidden"}}},
		{"20000 one-byte chunks", "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + strings.Repeat("1\r\nx\r\n", 20000) + "0\r\n\r\n" + hidden,
			[]string{"200 app /p", "200 alice /hidden"}, got{app: []string{"POST /p", "=" + strings.Repeat("x", 20000)}, alice: []string{"GET /hidden"}}},
		{"a bare CR in a field", "GET /p HTTP/1.1\r\nHost: x\r\nX-A: 1\rX-Dev: alice\r\n\r\n", []string{"400"}, got{}},
		{"NUL in a field", "GET /p HTTP/1.1\r\nHost: x\r\nX-Dev: al\x00ice\r\n\r\n", []string{"400"}, got{}},
		// connection handling
		{"Connection: close ends the connection", "GET /p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + hidden,
			[]string{"200 app /p"}, got{app: []string{"GET /p"}}},
		{"HTTP/1.0 keep-alive, handed over, the next still routed", "GET /old HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n" + hidden,
			[]string{"200 app /old", "200 alice /hidden"}, got{app: []string{"GET /old"}, alice: []string{"GET /hidden"}}},
		{"HTTP/1.0 without keep-alive ends the connection", "GET /old HTTP/1.0\r\nHost: x\r\n\r\n" + hidden,
			[]string{"200 app /old"}, got{app: []string{"GET /old"}}},
		// routing
		{"header names without case", "GET /p HTTP/1.1\r\nHost: x\r\nx-DEV: alice\r\n\r\n", []string{"200 alice /p"}, got{alice: []string{"GET /p"}}},
		{"values with case", "GET /p HTTP/1.1\r\nHost: x\r\nX-Dev: Alice\r\n\r\n", []string{"200 app /p"}, got{app: []string{"GET /p"}}},
		{"whitespace around a value", "GET /p HTTP/1.1\r\nHost: x\r\nX-Dev: \t alice \t\r\n\r\n", []string{"200 alice /p"}, got{alice: []string{"GET /p"}}},
		{"one of two fields", "GET /p HTTP/1.1\r\nHost: x\r\nX-Dev: bob\r\nX-Dev: alice\r\n\r\n", []string{"200 alice /p"}, got{alice: []string{"GET /p", "+X-Dev: bob"}}},
		{"a list is one value", "GET /p HTTP/1.1\r\nHost: x\r\nX-Dev: bob, alice\r\n\r\n", []string{"200 app /p"}, got{app: []string{"GET /p"}}},
		{"a trailer does not route", "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Dev: alice\r\n\r\n", []string{"200 app /p"}, got{app: []string{"POST /p"}}},
		{"absolute form: its path and host", "GET http://other/api/x HTTP/1.1\r\nHost: x\r\nX-Dev: bob\r\n\r\n", []string{"200 bob /api/x"}, got{bob: []string{"GET /api/x", "+Host: other"}}},
		{"%2F decoded for the path rule", "GET /api%2Fx HTTP/1.1\r\nHost: x\r\nX-Dev: bob\r\n\r\n", []string{"200 bob /api/x"}, got{bob: []string{"GET /api%2Fx"}}},
		{"dot segments not removed", "GET /api/../admin HTTP/1.1\r\nHost: x\r\nX-Dev: bob\r\n\r\n", []string{"200 bob /api/../admin"}, got{bob: []string{"GET /api/../admin"}}},
		{"outside the prefix", "GET /admin HTTP/1.1\r\nHost: x\r\nX-Dev: bob\r\n\r\n", []string{"200 app /admin"}, got{app: []string{"GET /admin"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			appBefore, _ := app.seen()
			aliceBefore, _ := alice.seen()
			bobBefore, _ := bob.seen()
			c, br := rawConn(t, w)
			io.WriteString(c, tc.raw)
			for _, want := range tc.answers {
				res, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("answer %q: %v", want, err)
				}
				b, _ := io.ReadAll(res.Body)
				answer := strconv.Itoa(res.StatusCode) + " " + string(b)
				if res.StatusCode >= 400 {
					answer = strconv.Itoa(res.StatusCode)
				}
				if answer != want {
					t.Errorf("answer %q, want %q", answer, want)
				}
			}
			// then nothing more; the connection ends after a refusal, a
			// Connection: close, an HTTP/1.0 request without keep-alive
			ends := tc.answers[len(tc.answers)-1] >= "4" || strings.Contains(tc.name, "ends the connection")
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if n, err := br.Read(make([]byte, 1)); n > 0 || ends && err != io.EOF || !ends && !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("after the answers: %d bytes, %v (want the connection ended: %v)", n, err, ends)
			}
			for _, b := range []struct {
				name   string
				a      *rawH1App
				before []string
				want   []string
			}{{"app", app, appBefore, tc.want.app}, {"alice", alice, aliceBefore, tc.want.alice}, {"bob", bob, bobBefore, tc.want.bob}} {
				heads, bodies := b.a.seen()
				checkHeads(t, b.name, heads[len(b.before):], bodies[len(b.before):], b.want)
			}
		})
	}
}

// checkHeads checks that heads are want's request lines ("METHOD PATH"),
// each followed by the fields its head must (+) or must not (-) have, and
// its body (=).
func checkHeads(t *testing.T, name string, heads, bodies, want []string) {
	t.Helper()
	i := -1
	for _, wl := range want {
		switch wl[0] {
		case '=':
			if i >= 0 && i < len(bodies) && bodies[i] != wl[1:] {
				t.Errorf("%s got the body %q, want %q", name, bodies[i], wl[1:])
			}
		case '+', '-':
			if i < 0 || i >= len(heads) {
				continue
			}
			if has := strings.Contains(heads[i], "\r\n"+wl[1:]); has != (wl[0] == '+') {
				t.Errorf("%s got %q: want %s", name, heads[i], wl)
			}
		default:
			i++
			if i >= len(heads) || !strings.HasPrefix(heads[i], wl+" HTTP/1.1\r\n") {
				t.Errorf("%s got %q, want %q as request %d", name, heads, wl, i)
				return
			}
		}
	}
	if len(heads) != i+1 {
		t.Errorf("%s got %q, want %d requests", name, heads, i+1)
	}
}

func TestHTTP1LoopResponseShapes(t *testing.T) {
	// Odd but well-framed answers, pipelined: each caller's request gets
	// its own answer, framed as the agent read it, 1xx passed on first.
	app := startRawH1App(t, func(r *http.Request) string {
		switch r.URL.Path {
		case "/clte": // Transfer-Encoding wins (RFC 9112 §6.3)
			return "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
		case "/103":
			return "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
		case "/100":
			return "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
		case "/204":
			return "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
		case "/close":
			return "HTTP/1.1 200 OK\r\n\r\nuntil close" + closeMark
		}
		return okAnswer("app")(r)
	})
	w := startRawAgent(t, app, startRawH1App(t, okAnswer("alice")))
	c, br := rawConn(t, w)
	var raw string
	for _, p := range []string{"/clte", "/103", "/100", "/204", "/mine", "/close", "/after-close"} {
		raw += "GET " + p + " HTTP/1.1\r\nHost: x\r\n\r\n"
	}
	io.WriteString(c, raw)
	for _, want := range []string{"200 hello", "103 ", "200 ok", "100 ", "200 ok", "204 ", "200 app /mine", "200 until close", "200 app /after-close"} {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("want %q: %v", want, err)
		}
		b, err := io.ReadAll(res.Body)
		if got := strconv.Itoa(res.StatusCode) + " " + string(b); got != want || err != nil {
			t.Errorf("%q (%v), want %q", got, err, want)
		}
	}
}

func TestHTTP1LoopBuffersLittleForACallerThatDoesNotRead(t *testing.T) {
	// A caller pipelines requests and reads no answer: the loop reads its
	// next request only once the answer before it was written, so what it
	// takes from the app stops at what the sockets hold.
	const size = 64 << 10
	var served atomic.Int32
	w, _ := startH1Agent(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		w.Write(make([]byte, size))
	}), nil)
	c, _ := rawConn(t, w)
	go io.WriteString(c, strings.Repeat("GET /big HTTP/1.1\r\nHost: x\r\n\r\n", 2000))
	time.Sleep(time.Second)
	n := served.Load()
	time.Sleep(500 * time.Millisecond)
	t.Logf("%d answers of 64 KiB served to a caller that reads none", n)
	// loopback sockets hold a few MiB: some 64 KiB answers fit
	if m := served.Load(); m > 200 || m != n {
		t.Errorf("the app served %d answers of 64 KiB (then %d) to a caller that reads none, want a bounded few", n, m)
	}
}

func TestHTTP1LoopDoesNotTakeCONNECT(t *testing.T) {
	// The app is a proxy: it answers CONNECT with 200 (and a
	// Content-Length it should not send, RFC 9110 §9.3.6) and the
	// connection is then a tunnel to the host the caller chose. The loop
	// must not send the request in a form the app reads otherwise (its
	// target rewritten to "/"), nor put a tunnel back in the pool, where
	// the next caller's request would go through it.
	app := startRawH1App(t, func(r *http.Request) string {
		if r.Method == http.MethodConnect {
			return "HTTP/1.1 200 Connection established\r\nContent-Length: 0\r\n\r\n" + tunnelMark
		}
		return okAnswer("app")(r)
	})
	w := startRawAgent(t, app, startRawH1App(t, okAnswer("alice")))
	c, br := rawConn(t, w)
	io.WriteString(c, "CONNECT other:443 HTTP/1.1\r\nHost: other:443\r\n\r\n")
	if res, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect}); err != nil || res.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", res, err)
	}
	heads, _ := app.seen()
	if len(heads) != 1 || !strings.HasPrefix(heads[0], "CONNECT other:443 HTTP/1.1\r\n") {
		t.Errorf("the app got %q, want CONNECT other:443", heads)
	}
	time.Sleep(100 * time.Millisecond)
	for range 3 {
		next, nbr := rawConn(t, w)
		if res, body := rawExchange(t, next, nbr, "GET", "GET /mine HTTP/1.1\r\nHost: x\r\n\r\n"); body != "app /mine" {
			t.Errorf("the next caller got %d %q, want the app's answer (not the tunnel's)", res.StatusCode, body)
		}
	}
}

func TestHTTP1LoopDoesNotReplayARequestThatMayHaveBeenServed(t *testing.T) {
	// The app acts on a request, then drops the connection without an
	// answer (a handler's panic does that). A bodyless request may be
	// sent again on a new connection only if it is idempotent, as
	// net/http's Transport decides (GET, HEAD, OPTIONS, TRACE, or an
	// Idempotency-Key): a POST or DELETE would be done twice.
	var done atomic.Int32
	w, _ := startH1Agent(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/act" {
			done.Add(1)
			panic(http.ErrAbortHandler)
		}
	}), nil)
	for _, tc := range []struct {
		method, field string
		want          int32
	}{{"POST", "", 1}, {"DELETE", "", 1}, {"GET", "", 2}, {"POST", "Idempotency-Key: k1\r\n", 2}} {
		c, br := rawConn(t, w)
		rawExchange(t, c, br, "GET", "GET /warm HTTP/1.1\r\nHost: x\r\n\r\n") // the next request goes on a reused connection
		done.Store(0)
		res, _ := rawExchange(t, c, br, tc.method, tc.method+" /act HTTP/1.1\r\nHost: x\r\n"+tc.field+"\r\n")
		if n := done.Load(); n != tc.want || res.StatusCode != http.StatusBadGateway {
			t.Errorf("%s %q: the app acted %d times (answer %d), want %d (502)", tc.method, tc.field, n, res.StatusCode, tc.want)
		}
	}
}

func TestHTTP1LoopBoundsAResponseHead(t *testing.T) {
	// A backend (the app, or a developer's process) sends an endless
	// response head: the loop reads at most 1 MiB of it, as the h2c relay
	// does, and answers 502, rather than holding all of it in memory.
	const headSize = 32 << 20
	app := startRawH1App(t, func(r *http.Request) string {
		switch r.URL.Path {
		case "/hints": // endless early hints
			return strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n", headSize/45) + "HTTP/1.1 204 No Content\r\n\r\n"
		case "/huge":
		default:
			return okAnswer("app")(r)
		}
		line := "X-A: " + strings.Repeat("a", 1000) + "\r\n"
		return "HTTP/1.1 200 OK\r\n" + strings.Repeat(line, headSize/len(line)) + "Content-Length: 2\r\n\r\nok"
	})
	w := startRawAgent(t, app, startRawH1App(t, okAnswer("alice")))
	c, br := rawConn(t, w)
	res, body := rawExchange(t, c, br, "GET", "GET /huge HTTP/1.1\r\nHost: x\r\n\r\n")
	if res.StatusCode != http.StatusBadGateway || !strings.Contains(body, "response head too large") {
		t.Errorf("a %d MiB response head: %d %q, want 502", headSize>>20, res.StatusCode, body)
	}
	c, br = rawConn(t, w)
	io.WriteString(c, "GET /hints HTTP/1.1\r\nHost: x\r\n\r\n")
	hints := 0
	for {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("after %d early hints: %v", hints, err)
		}
		if res.StatusCode != 103 {
			if res.StatusCode != http.StatusBadGateway {
				t.Errorf("after %d early hints: %d, want 502", hints, res.StatusCode)
			}
			break
		}
		hints++
	}
	// the head cut short, the next request gets a connection of its own
	c, br = rawConn(t, w)
	if res, body := rawExchange(t, c, br, "GET", "GET /mine HTTP/1.1\r\nHost: x\r\n\r\n"); body != "app /mine" {
		t.Errorf("after: %d %q", res.StatusCode, body)
	}
}
