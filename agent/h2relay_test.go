package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/detour-dev/detour/agent"
	"github.com/detour-dev/detour/tunnel"
	"golang.org/x/net/http2"
)

// The h2c relay (h2relay.go) passes the streams of h2c callers on, frame
// by frame, to an h2c app and to h2c local processes; what it does not
// pass on itself goes to the port's net/http server. These tests speak
// h2c to it and count, with its metric, which path each request took.

// h2cApp serves h over h2c (and HTTP/1.1); conns counts its connections.
func h2cApp(t *testing.T, h http.Handler) (net.Listener, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := new(atomic.Int32)
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols), ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln, conns
}

// h2cTestHandler answers as name: /echo echoes the body as it comes (with
// a trailer holding its SHA-256), /sum answers the body's length and
// SHA-256 once read, /big?n= sends n bytes, /abort resets the stream
// before answering, /abort-late after the head, /wait waits for the
// caller to go away (telling gone); others answer name, proto and URI.
func h2cTestHandler(name string, gone chan<- string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Name", name)
		switch r.URL.Path {
		case "/echo":
			w.Header().Set("Trailer", "X-Sum")
			w.WriteHeader(http.StatusOK)
			h := sha256.New()
			buf := make([]byte, 32<<10)
			for {
				n, err := r.Body.Read(buf)
				h.Write(buf[:n])
				w.Write(buf[:n])
				w.(http.Flusher).Flush()
				if err != nil {
					break
				}
			}
			w.Header().Set("X-Sum", fmt.Sprintf("%x", h.Sum(nil)))
		case "/sum":
			h := sha256.New()
			n, _ := io.Copy(h, r.Body)
			fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
		case "/big":
			n, _ := strconv.Atoi(r.URL.Query().Get("n"))
			w.Write(bigBody(n))
		case "/abort":
			panic(http.ErrAbortHandler)
		case "/abort-late":
			w.WriteHeader(http.StatusOK)
			w.Write([]byte("partial"))
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		case "/wait":
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			gone <- name
		default:
			fmt.Fprintf(w, "%s %s %s", name, r.Proto, r.URL.RequestURI())
		}
	})
}

func bigBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// h2cCaller is one h2c connection to the agent's front: all its requests
// share it.
func h2cCaller(t *testing.T, w *world) (*http2.Transport, *atomic.Int32) {
	dials := new(atomic.Int32)
	tr := &http2.Transport{AllowHTTP: true, DisableCompression: true, DialTLSContext: func(ctx context.Context, _, _ string, _ *tls.Config) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", w.front)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return tr, dials
}

// startH2CAgent runs an agent in front of an h2c app, with alice's http
// intercept (x-dev: alice) to a local process; localH2C says whether that
// process speaks h2c too.
func startH2CAgent(t *testing.T, localH2C bool, gone chan string) (w *world, appConns *atomic.Int32) {
	t.Helper()
	app, appConns := h2cApp(t, h2cTestHandler("app", gone))
	w = startAgent(t, func(c *agent.Config) {
		c.Listeners = []agent.PortMap{{Listen: freePort(t), App: uint16(app.Addr().(*net.TCPAddr).Port)}}
	})
	var local net.Listener
	if localH2C {
		local, _ = h2cApp(t, h2cTestHandler("alice", gone))
	} else {
		local, _ = h1App(t, h2cTestHandler("alice", gone), nil)
	}
	alice, _ := openClient(t, w, "alice@laptop", tunnel.Config{})
	if err := httpIntercept(t, alice, "web", w.appPort, local, "x-dev=alice"); err != nil {
		t.Fatal(err)
	}
	return w, appConns
}

var h2cStreamsRE = regexp.MustCompile(`detour_agent_http_h2c_streams_total\{path="(relay|fallback)"\} (\d+)`)

// h2cStreams reads the relay's metric: requests passed on by the relay,
// and handed to the net/http server.
func h2cStreams(t *testing.T, w *world) (relay, fallback int) {
	t.Helper()
	for _, m := range h2cStreamsRE.FindAllStringSubmatch(agentMetricsText(t, w), -1) {
		n, _ := strconv.Atoi(m[2])
		if m[1] == "relay" {
			relay = n
		} else {
			fallback = n
		}
	}
	return relay, fallback
}

type h2cAnswer struct {
	status  int
	name    string
	body    []byte
	trailer http.Header
	err     error
}

func h2cDo(rt http.RoundTripper, method, url string, body io.Reader, header ...string) h2cAnswer {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, url, body)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return h2cAnswer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return h2cAnswer{status: resp.StatusCode, name: resp.Header.Get("X-Name"), body: b, trailer: resp.Trailer, err: err}
}

func TestH2CRelayPassesStreamsOn(t *testing.T) {
	w, appConns := startH2CAgent(t, true, nil)
	rt, dials := h2cCaller(t, w)
	base := "http://" + w.front
	for _, tc := range []struct {
		header []string
		want   string
	}{{nil, "app"}, {[]string{"x-dev", "alice"}, "alice"}, {[]string{"x-dev", "bob"}, "app"}} {
		a := h2cDo(rt, http.MethodGet, base+"/p?q=1", nil, tc.header...)
		if want := tc.want + " HTTP/2.0 /p?q=1"; a.err != nil || string(a.body) != want {
			t.Errorf("%v: %q (%v), want %q", tc.header, a.body, a.err, want)
		}
	}

	// Bodies several times the windows, both ways, on concurrent streams
	// of one connection: flow control must neither lose nor stall bytes.
	const size = 3<<20 + 12345
	body := bigBody(size)
	sum := sha256.Sum256(body)
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() {
			who := []string{"x-dev", []string{"alice", "app"}[i%2]}
			want := []string{"alice", "app"}[i%2]
			switch i % 3 {
			case 0: // upload
				a := h2cDo(rt, http.MethodPost, base+"/sum", bytes.NewReader(body), who...)
				if exp := fmt.Sprintf("%d %x", size, sum); a.err != nil || a.name != want || string(a.body) != exp {
					t.Errorf("upload %d to %s: %q from %q (%v), want %q", i, want, a.body, a.name, a.err, exp)
				}
			case 1: // download
				a := h2cDo(rt, http.MethodGet, base+"/big?n="+strconv.Itoa(size), nil, who...)
				if a.err != nil || a.name != want || !bytes.Equal(a.body, body) {
					t.Errorf("download %d from %s: %d bytes from %q (%v), want %d", i, want, len(a.body), a.name, a.err, size)
				}
			default: // both at once, and a trailer
				a := h2cDo(rt, http.MethodPost, base+"/echo", struct{ io.Reader }{bytes.NewReader(body)}, who...)
				if a.err != nil || a.name != want || !bytes.Equal(a.body, body) || a.trailer.Get("X-Sum") != fmt.Sprintf("%x", sum) {
					t.Errorf("echo %d through %s: %d bytes from %q, trailer %q (%v)", i, want, len(a.body), a.name, a.trailer.Get("X-Sum"), a.err)
				}
			}
		})
	}
	wg.Wait()
	if n := dials.Load(); n != 1 {
		t.Errorf("the caller opened %d connections, want 1", n)
	}
	relay, fallback := h2cStreams(t, w)
	if relay != 9 || fallback != 0 {
		t.Errorf("h2c streams: %d relayed, %d handed to net/http; want 9 and 0", relay, fallback)
	}
	// The relay keeps an h2c connection of its own to the app per caller
	// connection (net/http's Transport would share one); probed once.
	rt2, _ := h2cCaller(t, w)
	if a := h2cDo(rt2, http.MethodGet, base+"/", nil); a.err != nil || a.name != "app" {
		t.Fatalf("second caller: %q (%v)", a.body, a.err)
	}
	if n := appConns.Load(); n != 3 {
		t.Errorf("the app saw %d connections, want 3: the probe's and one per caller connection", n)
	}
}

func TestH2CRelayFallsBackToNetHTTP(t *testing.T) {
	// alice's process speaks HTTP/1.1 only: her requests go to net/http's
	// server, which converts them; the app's stay on the relay.
	w, _ := startH2CAgent(t, false, nil)
	rt, dials := h2cCaller(t, w)
	base := "http://" + w.front
	if a := h2cDo(rt, http.MethodGet, base+"/a", nil, "x-dev", "alice"); a.err != nil || string(a.body) != "alice HTTP/1.1 /a" {
		t.Errorf("alice: %q (%v), want her HTTP/1.1 process", a.body, a.err)
	}
	if a := h2cDo(rt, http.MethodPost, base+"/sum", strings.NewReader("hello"), "x-dev", "alice"); a.err != nil || !strings.HasPrefix(string(a.body), "5 ") {
		t.Errorf("alice, a body: %q (%v)", a.body, a.err)
	}
	if a := h2cDo(rt, http.MethodGet, base+"/b", nil); a.err != nil || string(a.body) != "app HTTP/2.0 /b" {
		t.Errorf("app: %q (%v)", a.body, a.err)
	}
	// A preview link sets its cookie: that is net/http's path too.
	req, _ := http.NewRequest(http.MethodGet, base+"/?"+tunnel.PreviewQuery+"=web-preview-token-0123456789", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "alice HTTP/1.1 /" || !strings.Contains(resp.Header.Get("Set-Cookie"), tunnel.PreviewCookie+"=") {
		t.Errorf("preview link: %q, Set-Cookie %q; want alice's process and the cookie", b, resp.Header.Get("Set-Cookie"))
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("the caller opened %d connections, want 1", n)
	}
	if relay, fallback := h2cStreams(t, w); relay != 1 || fallback != 3 {
		t.Errorf("h2c streams: %d relayed, %d handed to net/http; want 1 and 3", relay, fallback)
	}
}

func TestH2CRelayResets(t *testing.T) {
	gone := make(chan string, 4)
	w, _ := startH2CAgent(t, true, gone)
	rt, dials := h2cCaller(t, w)
	base := "http://" + w.front
	for _, who := range []string{"app", "alice"} {
		// Reset before the answer: 502, as from ReverseProxy.
		a := h2cDo(rt, http.MethodGet, base+"/abort", nil, "x-dev", who)
		if a.err != nil || a.status != http.StatusBadGateway || !strings.HasPrefix(string(a.body), "detour: ") {
			t.Errorf("%s resets before answering: %d %q (%v), want the agent's 502", who, a.status, a.body, a.err)
		}
		// After the head: the caller's stream is reset too.
		a = h2cDo(rt, http.MethodGet, base+"/abort-late", nil, "x-dev", who)
		if a.err == nil {
			t.Errorf("%s resets after its head: %d %q, want a stream error", who, a.status, a.body)
		}
		// The caller goes away: the backend's request ends.
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/wait", nil)
		req.Header.Set("x-dev", who)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		resp.Body.Close()
		select {
		case got := <-gone:
			if got != who {
				t.Errorf("%s's request ended, want %s's", got, who)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s's request still running after the caller reset it", who)
		}
	}
	if a := h2cDo(rt, http.MethodGet, base+"/after", nil); a.err != nil || a.name != "app" {
		t.Errorf("after the resets: %q (%v)", a.body, a.err)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("the caller opened %d connections, want 1: the resets were the streams'", n)
	}
}

// TestH2CRelayLetsGoOfARemovedIntercept: once alice's intercept is gone,
// the relay's idle connection to her process closes, though the caller's
// connection stays open; her header then reaches the app.
func TestH2CRelayLetsGoOfARemovedIntercept(t *testing.T) {
	app, _ := h2cApp(t, h2cTestHandler("app", nil))
	w := startAgent(t, func(c *agent.Config) {
		c.Listeners = []agent.PortMap{{Listen: freePort(t), App: uint16(app.Addr().(*net.TCPAddr).Port)}}
	})
	var open atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h2cTestHandler("alice", nil), Protocols: new(http.Protocols), ConnState: func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}}
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	alice, _ := openClient(t, w, "alice@laptop", tunnel.Config{})
	if err := httpIntercept(t, alice, "web", w.appPort, ln, "x-dev=alice"); err != nil {
		t.Fatal(err)
	}
	rt, dials := h2cCaller(t, w)
	base := "http://" + w.front
	if a := h2cDo(rt, http.MethodGet, base+"/", nil, "x-dev", "alice"); a.err != nil || a.name != "alice" {
		t.Fatalf("alice: %q (%v)", a.body, a.err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := alice.RemoveIntercept(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "alice's process has no connection left", func() bool { return open.Load() == 0 })
	if a := h2cDo(rt, http.MethodGet, base+"/", nil, "x-dev", "alice"); a.err != nil || a.name != "app" {
		t.Errorf("after the removal: %q from %q (%v), want the app", a.body, a.name, a.err)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("the caller opened %d connections, want 1", n)
	}
}

// h2cAppBehindAgent serves srv as an h2c app on a loopback port, starts
// an agent in front of it and gives alice an http intercept of it
// (x-dev=alice to her own server).
func h2cAppBehindAgent(t *testing.T, srv *http.Server) *world {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	w := startAgent(t, func(c *agent.Config) {
		c.Listeners = []agent.PortMap{{Listen: freePort(t), App: uint16(ln.Addr().(*net.TCPAddr).Port)}}
	})
	alice, _ := openClient(t, w, "alice@laptop", tunnel.Config{})
	if err := httpIntercept(t, alice, "web", w.appPort, nameServer(t, "alice"), "x-dev=alice"); err != nil {
		t.Fatal(err)
	}
	return w
}

// TestH2CRelayFollowsTheAppsLimits: an app that allows 2 concurrent
// streams per connection gets more connections from the relay for the
// caller's 8; an app that closes an idle connection (GOAWAY) gets the next
// request on a new one.
func TestH2CRelayFollowsTheAppsLimits(t *testing.T) {
	var conns atomic.Int32
	release := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			<-release
		}
		io.WriteString(w, "app")
	}), Protocols: new(http.Protocols), HTTP2: &http.HTTP2Config{MaxConcurrentStreams: 2},
		IdleTimeout: 300 * time.Millisecond,
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		}}
	w := h2cAppBehindAgent(t, srv)
	rt, dials := h2cCaller(t, w)
	base := "http://" + w.front
	if a := h2cDo(rt, http.MethodGet, base+"/", nil); a.err != nil || string(a.body) != "app" {
		t.Fatalf("first request: %q (%v)", a.body, a.err)
	}
	before := conns.Load()
	answers := make(chan h2cAnswer, 8)
	for range 8 {
		go func() { answers <- h2cDo(rt, http.MethodGet, base+"/hold", nil) }()
	}
	eventually(t, 3*time.Second, "the relay opens connections for 8 streams, 2 each", func() bool { return conns.Load()-before >= 3 })
	close(release)
	for range 8 {
		if a := <-answers; a.err != nil || string(a.body) != "app" {
			t.Errorf("held request: %q (%v)", a.body, a.err)
		}
	}
	time.Sleep(time.Second) // the app closes the idle connections
	if a := h2cDo(rt, http.MethodGet, base+"/after-idle", nil); a.err != nil || string(a.body) != "app" {
		t.Errorf("after the app closed its idle connections: %q (%v)", a.body, a.err)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("the caller opened %d connections, want 1", n)
	}
	if relay, fallback := h2cStreams(t, w); relay != 10 || fallback != 0 {
		t.Errorf("h2c streams: %d relayed, %d handed to net/http; want 10 and 0", relay, fallback)
	}
}

// TestH2CRelaySmallWindows: a caller and an app that give small windows
// (4 KiB per stream, 64 KiB per connection) and read slowly: the relay
// holds what they cannot take yet and loses, reorders and stalls nothing.
func TestH2CRelaySmallWindows(t *testing.T) {
	small := &http.HTTP2Config{MaxReceiveBufferPerStream: 4 << 10, MaxReceiveBufferPerConnection: 64 << 10}
	srv := &http.Server{Handler: h2cTestHandler("app", nil), Protocols: new(http.Protocols), HTTP2: small}
	w := h2cAppBehindAgent(t, srv)
	tr := &http.Transport{Protocols: new(http.Protocols), HTTP2: small}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	base := "http://" + w.front
	body := bigBody(1<<20 + 777)
	sum := sha256.Sum256(body)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			a := h2cDo(slowReader{tr}, http.MethodPost, base+"/echo", struct{ io.Reader }{bytes.NewReader(body)})
			if a.err != nil || !bytes.Equal(a.body, body) || a.trailer.Get("X-Sum") != fmt.Sprintf("%x", sum) {
				t.Errorf("echo %d: %d %d bytes %.80q, trailer %q (%v)", i, a.status, len(a.body), a.body, a.trailer.Get("X-Sum"), a.err)
			}
		})
	}
	wg.Wait()
	if relay, _ := h2cStreams(t, w); relay != 4 {
		t.Errorf("%d streams relayed, want 4", relay)
	}
}

// slowReader reads response bodies in small pieces, pausing between them.
type slowReader struct{ rt http.RoundTripper }

func (s slowReader) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := s.rt.RoundTrip(r)
	if err == nil {
		resp.Body = &slowBody{ReadCloser: resp.Body}
	}
	return resp, err
}

type slowBody struct {
	io.ReadCloser
	n int
}

func (b *slowBody) Read(p []byte) (int, error) {
	if b.n++; b.n%64 == 0 {
		time.Sleep(time.Millisecond)
	}
	return b.ReadCloser.Read(p[:min(len(p), 3000)])
}

// TestHTTP1CallersOfAnH2CApp: on a port whose app speaks h2c, HTTP/1.1
// connections whose first request starts with 'P' (POST, PUT, PATCH: what
// the agent must tell from the h2c preface) are served whole by the
// HTTP/1.1 path, each request where its headers say, body included; the
// relay sees none of them.
func TestHTTP1CallersOfAnH2CApp(t *testing.T) {
	w, _ := startH2CAgent(t, false, nil)
	for _, tc := range []struct {
		method, dev, want string
	}{
		{"POST", "alice", "alice"},
		{"PUT", "", "app"},
		{"PATCH", "alice", "alice"},
		{"POST", "", "app"},
	} {
		c, err := net.Dial("tcp", w.front)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		for i := range 2 { // a second request on the same connection
			head := fmt.Sprintf("%s /sum HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\n", tc.method)
			if tc.dev != "" {
				head += "X-Dev: " + tc.dev + "\r\n"
			}
			if _, err := io.WriteString(c, head+"\r\nhello"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("%s %s, request %d: %v", tc.method, tc.dev, i, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Name") != tc.want || !strings.HasPrefix(string(body), "5 ") {
				t.Errorf("%s (x-dev %q), request %d: %d from %q, %q; want 200 from %s with the 5 bytes", tc.method, tc.dev, i, resp.StatusCode, resp.Header.Get("X-Name"), body, tc.want)
			}
		}
		c.Close()
	}
	if relay, _ := h2cStreams(t, w); relay != 0 {
		t.Errorf("the h2c relay passed on %d requests, want none", relay)
	}
}

// TestH2CRelayStalledStreamHoldsOnlyItself: a caller that stops reading
// one stream (its window for it closed) still gets its other streams'
// answers from the same app, as it would without the relay; the stalled
// stream's bytes all come once it reads again. Before the relay lent a
// connection what it held for slow readers, the app's 4 MiB filled the
// relay's 1 MiB connection window with the app and stream 3 waited.
func TestH2CRelayStalledStreamHoldsOnlyItself(t *testing.T) {
	const big = 4 << 20
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			w.Write(bigBody(big))
			return
		}
		io.WriteString(w, "small")
	}), Protocols: new(http.Protocols)}
	w := h2cAppBehindAgent(t, srv)
	rc := dialH2CRaw(t, w)
	// A large connection window, the protocol's default 65,535 per stream.
	if err := rc.fr.WriteWindowUpdate(0, 100<<20); err != nil {
		t.Fatal(err)
	}
	if err := rc.headers(1, "/big"); err != nil {
		t.Fatal(err)
	}
	got := 0
	for got < 65535 { // stream 1's window at the caller, taken
		f := rc.await(5*time.Second, isFrame(http2.FrameData, 1))
		if f == nil || f.typ != http2.FrameData {
			t.Fatalf("stream 1: %v after %d bytes, want DATA", f, got)
		}
		got += f.n
	}
	time.Sleep(200 * time.Millisecond) // the app sends what the relay's windows allow
	if err := rc.headers(3, "/small"); err != nil {
		t.Fatal(err)
	}
	if f := rc.await(5*time.Second, isFrame(http2.FrameData, 3)); f == nil || f.typ != http2.FrameData {
		t.Fatalf("stream 3's answer: %v, want DATA (held up behind stream 1, which the caller does not read)", f)
	}
	if err := rc.fr.WriteWindowUpdate(1, big); err != nil {
		t.Fatal(err)
	}
	for end := false; !end; {
		f := rc.await(5*time.Second, isFrame(http2.FrameData, 1))
		if f == nil || f.typ != http2.FrameData {
			t.Fatalf("stream 1 once read again: %v after %d of %d bytes", f, got, big)
		}
		got, end = got+f.n, f.end
	}
	if got != big {
		t.Errorf("stream 1: %d bytes, want %d", got, big)
	}
}

// agentMetricsText is the agent's /metrics page.
func agentMetricsText(t *testing.T, w *world) string {
	t.Helper()
	resp, err := http.Get("http://" + w.agent.Addrs().Metrics.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// h2cLent reads detour_agent_http_h2c_lent_bytes.
func h2cLent(t *testing.T, w *world) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^detour_agent_http_h2c_lent_bytes (\S+)$`).FindStringSubmatch(agentMetricsText(t, w))
	if m == nil {
		t.Fatal("no detour_agent_http_h2c_lent_bytes in the agent's metrics")
	}
	n, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

// TestH2CRelayLendingIsBounded: callers that stall many streams at once
// get their connections acknowledged for at most 4 MiB each and 16 MiB
// for the agent (detour_agent_http_h2c_lent_bytes), and all of it comes
// back when they go.
func TestH2CRelayLendingIsBounded(t *testing.T) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/sink" { // reads nothing of the body
			<-r.Context().Done()
			return
		}
		w.Write(bigBody(2 << 20))
	}), Protocols: new(http.Protocols)}
	w := h2cAppBehindAgent(t, srv)
	lentWhile := func(callers, streams int, upload func(*h2cRawCaller)) int {
		var rcs []*h2cRawCaller
		for range callers {
			rc := dialH2CRaw(t, w)
			rc.fr.WriteWindowUpdate(0, 100<<20)
			for i := range streams {
				if err := rc.headers(uint32(2*i+1), "/big"); err != nil {
					t.Fatal(err)
				}
			}
			if upload != nil {
				upload(rc)
			}
			rcs = append(rcs, rc)
		}
		// Each stream: the caller's 65,535 bytes, then the relay holds
		// its 1 MiB window's worth.
		var lent int
		deadline := time.Now().Add(10 * time.Second)
		for prev := -1; time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if lent = h2cLent(t, w); lent == prev && lent > 0 {
				break
			}
			prev = lent
		}
		for _, rc := range rcs {
			rc.c.Close()
		}
		eventually(t, 5*time.Second, "lent bytes back once the callers are gone", func() bool { return h2cLent(t, w) == 0 })
		return lent
	}
	if got, want := lentWhile(1, 2, nil), 2*(1<<20); got < want*9/10 || got > want {
		t.Errorf("one caller, 2 stalled streams: %d bytes lent, want about %d (what the relay holds)", got, want)
	}
	if got := lentWhile(1, 6, nil); got != 4<<20 {
		t.Errorf("one caller, 6 stalled streams: %d bytes lent, want 4 MiB (the connection's bound)", got)
	}
	if got := lentWhile(5, 6, nil); got != 16<<20 {
		t.Errorf("5 callers, 6 stalled streams each: %d bytes lent, want 16 MiB (the agent's bound)", got)
	}
	// Uploads: 1 MiB on a stream fills the app's connection window; the
	// relay holds the next stream's 512 KiB, and lends the caller's
	// connection that much.
	sink := func(rc *h2cRawCaller) {
		chunk := make([]byte, 16<<10)
		for _, up := range []struct {
			id    uint32
			bytes int
		}{{101, 1 << 20}, {103, 512 << 10}} {
			if err := rc.post(up.id, "/sink"); err != nil {
				t.Fatal(err)
			}
			for n := 0; n < up.bytes; n += len(chunk) {
				if err := rc.fr.WriteData(up.id, false, chunk); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if got, want := lentWhile(1, 0, sink), 512<<10; got != want {
		t.Errorf("an upload held for an app that reads nothing: %d bytes lent, want %d", got, want)
	}
}
