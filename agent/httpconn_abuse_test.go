package agent_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/detour-dev/detour/agent"
	"github.com/detour-dev/detour/tunnel"
)

// These tests speak raw bytes to the HTTP/1.1 connection loop
// (httpconn.go) as a hostile caller in the cluster could, and put raw
// backends behind it: what a backend frames must be what the agent
// routed, and one caller's answer must not reach another.

// rawH1App is an HTTP/1.1 backend written by hand: it reads each request
// with http.ReadRequest (its body read whole) and writes what answer
// returns for it, raw (the part after lateMark a little later). heads keeps each request head as it came.
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
		now, later, _ := strings.Cut(answer(req), lateMark)
		if _, err := io.WriteString(c, now); err != nil {
			return
		}
		if later != "" {
			time.Sleep(50 * time.Millisecond)
			io.WriteString(c, later)
		}
	}
}

// lateMark in an answer: the app writes what follows 50 ms later.
const lateMark = "\x00later\x00"

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
