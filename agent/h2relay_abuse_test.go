package agent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/detour-dev/detour/agent"
	"github.com/detour-dev/detour/tunnel"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// These tests speak raw frames to the h2c relay, as a hostile caller in
// the cluster could: the relay must hold up as well as net/http's own
// HTTP/2 server would in front of the app.

// h2cRawCaller is an h2c connection to the agent's front written frame by
// frame; frames are what the relay sent, read until the connection ends.
type h2cRawCaller struct {
	c      net.Conn
	fr     *http2.Framer
	enc    *hpack.Encoder
	encBuf bytes.Buffer
	frames chan *h2cRawFrame
}

// h2cRawFrame is what the tests need of a frame the relay sent, copied
// before the Framer reads the next one (which invalidates it).
type h2cRawFrame struct {
	typ    http2.FrameType
	stream uint32
	code   http2.ErrCode // a RST_STREAM's or GOAWAY's
	status string        // a HEADERS frame's :status
	n      int           // a DATA frame's length, a WINDOW_UPDATE's increment
	end    bool          // END_STREAM
}

func (f *h2cRawFrame) String() string {
	return fmt.Sprintf("%v on stream %d (%v %s)", f.typ, f.stream, f.code, f.status)
}

func copyFrame(f http2.Frame) *h2cRawFrame {
	c := &h2cRawFrame{typ: f.Header().Type, stream: f.Header().StreamID}
	switch f := f.(type) {
	case *http2.DataFrame:
		c.n, c.end = int(f.Length), f.StreamEnded()
	case *http2.WindowUpdateFrame:
		c.n = int(f.Increment)
	case *http2.RSTStreamFrame:
		c.code = f.ErrCode
	case *http2.GoAwayFrame:
		c.code = f.ErrCode
	case *http2.MetaHeadersFrame:
		c.status = f.PseudoValue("status")
	}
	return c
}

func dialH2CRaw(t *testing.T, w *world) *h2cRawCaller {
	t.Helper()
	c, err := net.Dial("tcp", w.front)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		close(done)
		c.Close()
	})
	rc := &h2cRawCaller{c: c, fr: http2.NewFramer(c, c), frames: make(chan *h2cRawFrame, 1024)}
	rc.enc = hpack.NewEncoder(&rc.encBuf)
	rc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := rc.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(rc.frames)
		for {
			f, err := rc.fr.ReadFrame()
			if err != nil {
				return
			}
			select {
			case rc.frames <- copyFrame(f):
			case <-done: // the test stopped reading
				return
			}
		}
	}()
	return rc
}

// headers opens stream id with a GET of path, with extra fields.
func (rc *h2cRawCaller) headers(id uint32, path string, extra ...hpack.HeaderField) error {
	return rc.request(id, "GET", path, true, extra...)
}

// post opens stream id with a POST of path whose body follows (DATA
// frames the test writes).
func (rc *h2cRawCaller) post(id uint32, path string) error {
	return rc.request(id, "POST", path, false)
}

func (rc *h2cRawCaller) request(id uint32, method, path string, end bool, extra ...hpack.HeaderField) error {
	rc.encBuf.Reset()
	for _, f := range append([]hpack.HeaderField{{Name: ":method", Value: method}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "web"}, {Name: ":path", Value: path}}, extra...) {
		_ = rc.enc.WriteField(f)
	}
	return rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rc.encBuf.Bytes(), EndStream: end, EndHeaders: true})
}

// await returns the first frame the relay sends that want accepts, nil
// if the connection ends or nothing comes within d.
func (rc *h2cRawCaller) await(d time.Duration, want func(*h2cRawFrame) bool) *h2cRawFrame {
	timeout := time.After(d)
	for {
		select {
		case f, ok := <-rc.frames:
			if !ok {
				return nil
			}
			if want(f) {
				return f
			}
		case <-timeout:
			return nil
		}
	}
}

// wantGoAway checks that f is a GOAWAY with code, and that the
// connection then ends.
func (rc *h2cRawCaller) wantGoAway(t *testing.T, f *h2cRawFrame, code http2.ErrCode, what string) {
	t.Helper()
	if !f.is(http2.FrameGoAway, code) {
		t.Errorf("%s: %v, want a GOAWAY with %v", what, f, code)
	}
	if f := rc.await(3*time.Second, anyFrame); f != nil {
		t.Errorf("%s, after the GOAWAY: %v, want the connection closed", what, f)
	}
}

func isGoAway(f *h2cRawFrame) bool { return f.typ == http2.FrameGoAway }

func anyFrame(*h2cRawFrame) bool { return true }

// isFrame is true of a frame of type typ on stream id (0: any), or a
// GOAWAY.
func isFrame(typ http2.FrameType, id uint32) func(*h2cRawFrame) bool {
	return func(f *h2cRawFrame) bool { return f.typ == typ && (id == 0 || f.stream == id) || isGoAway(f) }
}

// is tells whether f is a frame of type typ with code.
func (f *h2cRawFrame) is(typ http2.FrameType, code http2.ErrCode) bool {
	return f != nil && f.typ == typ && f.code == code
}

// TestH2CRelayRapidReset (CVE-2023-44487): a caller that opens streams
// and resets them at once, in a loop. Each costs the app a request; the
// app's net/http server bounds what one connection starts (its
// MaxConcurrentStreams handlers at a time) and sends ENHANCE_YOUR_CALM to
// a connection that resets too many early. Behind the relay, that
// connection is the relay's own for this caller: the caller must be told
// to calm down too, and not given a fresh upstream connection to go on.
func TestH2CRelayRapidReset(t *testing.T) {
	var mu sync.Mutex
	running, most := 0, 0
	release := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/hold" { // the agent's probe
			return
		}
		mu.Lock()
		running++
		most = max(most, running)
		mu.Unlock()
		<-release // a handler slow to notice its caller went away
		mu.Lock()
		running--
		mu.Unlock()
	}), Protocols: new(http.Protocols), HTTP2: &http.HTTP2Config{MaxConcurrentStreams: 4}}
	w := h2cAppBehindAgent(t, srv)
	defer close(release)
	rc := dialH2CRaw(t, w)
	go func() {
		for i := range uint32(300) {
			id := 2*i + 1
			if rc.headers(id, "/hold") != nil || rc.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
				return
			}
			if i%25 == 24 { // paced: the app's GOAWAY reaches the relay
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()
	f := rc.await(5*time.Second, isGoAway)
	if !f.is(http2.FrameGoAway, http2.ErrCodeEnhanceYourCalm) {
		t.Errorf("the caller got %v, want a GOAWAY with ENHANCE_YOUR_CALM", f)
	}
	time.Sleep(200 * time.Millisecond) // what the relay still passed on arrives
	mu.Lock()
	defer mu.Unlock()
	if most > 4 {
		t.Errorf("the app ran %d handlers at once for one caller connection, want at most its limit, 4", most)
	}
}

// h2cRawAgent is an agent in front of an h2c app whose /hold waits for
// the test to end, with a raw caller connected.
func h2cRawAgent(t *testing.T) *h2cRawCaller {
	t.Helper()
	release := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	}), Protocols: new(http.Protocols)}
	w := h2cAppBehindAgent(t, srv)
	t.Cleanup(func() { close(release) })
	return dialH2CRaw(t, w)
}

// TestH2CRelayRefusesFramesTooLarge: the relay advertises no
// SETTINGS_MAX_FRAME_SIZE, so a frame over the protocol's 16 KiB is a
// connection error (FRAME_SIZE_ERROR, RFC 9113 §4.2), read no further:
// the Framer would otherwise take frames up to 16 MiB, and keep a buffer
// that size for the connection's life.
func TestH2CRelayRefusesFramesTooLarge(t *testing.T) {
	rc := h2cRawAgent(t)
	// An unknown frame type, which the relay must otherwise ignore.
	if err := rc.fr.WriteRawFrame(0xfa, 0, 0, make([]byte, 16384+1)); err != nil {
		t.Fatal(err)
	}
	if err := rc.fr.WritePing(false, [8]byte{1}); err != nil {
		t.Fatal(err)
	}
	rc.wantGoAway(t, rc.await(3*time.Second, isFrame(http2.FramePing, 0)), http2.ErrCodeFrameSize, "after a frame of 16 KiB + 1")
}

// TestH2CRelayWindowOverflow: a WINDOW_UPDATE that takes a stream's
// window past 2^31-1 is a stream error (FLOW_CONTROL_ERROR, RFC 9113
// §6.9.1), the connection's a connection error; so is a SETTINGS whose
// initial window takes a stream's there (§6.9.2).
func TestH2CRelayWindowOverflow(t *testing.T) {
	rc := h2cRawAgent(t)
	if err := rc.headers(1, "/hold"); err != nil {
		t.Fatal(err)
	}
	if err := rc.fr.WriteWindowUpdate(1, 1<<31-1); err != nil { // 65535 + that
		t.Fatal(err)
	}
	f := rc.await(3*time.Second, isFrame(http2.FrameRSTStream, 1))
	if !f.is(http2.FrameRSTStream, http2.ErrCodeFlowControl) {
		t.Errorf("stream window past 2^31-1: %v, want RST_STREAM with FLOW_CONTROL_ERROR", f)
	}
	// The connection is still good; a stream's window is taken to the
	// maximum, then the initial window grows by one.
	if err := rc.headers(3, "/hold"); err != nil {
		t.Fatal(err)
	}
	if err := rc.fr.WriteWindowUpdate(3, 1<<31-1-65535); err != nil {
		t.Fatal(err)
	}
	if err := rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65536}); err != nil {
		t.Fatal(err)
	}
	f = rc.await(3*time.Second, isFrame(http2.FrameRSTStream, 3))
	if !f.is(http2.FrameGoAway, http2.ErrCodeFlowControl) {
		t.Errorf("initial window taking a stream's past 2^31-1: %v, want GOAWAY with FLOW_CONTROL_ERROR", f)
	}
	// The connection's own window.
	rc = h2cRawAgent(t)
	if err := rc.fr.WriteWindowUpdate(0, 1<<31-1); err != nil {
		t.Fatal(err)
	}
	if f := rc.await(3*time.Second, isGoAway); !f.is(http2.FrameGoAway, http2.ErrCodeFlowControl) {
		t.Errorf("connection window past 2^31-1: %v, want GOAWAY with FLOW_CONTROL_ERROR", f)
	}
}

// TestH2CRelayFlushesAStreamError: a stream error found in a caller's
// frame (here a WINDOW_UPDATE past 2^31-1) once nothing else is under way
// must still reach the caller. The relay wrote the RST_STREAM and flushed
// it only with whatever came next, so a caller whose stream was answered
// already (the app holds its body) waited for ever: TestH2CRelayWindowOverflow
// failed so when its two frames happened to reach the relay after the
// app's answer.
func TestH2CRelayFlushesAStreamError(t *testing.T) {
	rc := h2cRawAgent(t)
	if err := rc.headers(1, "/hold"); err != nil {
		t.Fatal(err)
	}
	if f := rc.await(3*time.Second, isFrame(http2.FrameHeaders, 1)); f == nil || f.typ != http2.FrameHeaders || f.status != "200" {
		t.Fatalf("the app's answer: %v, want HEADERS 200", f)
	}
	if err := rc.fr.WriteWindowUpdate(1, 1<<31-1); err != nil {
		t.Fatal(err)
	}
	if f := rc.await(3*time.Second, isFrame(http2.FrameRSTStream, 1)); !f.is(http2.FrameRSTStream, http2.ErrCodeFlowControl) {
		t.Errorf("stream window past 2^31-1 on an answered stream: %v, want RST_STREAM with FLOW_CONTROL_ERROR", f)
	}
}

// TestH2CRelayResponseHeadersTooLarge: a response head over the header
// list size the relay advertises (1 MiB) is cut short by the Framer; the
// caller must get a 502, as from net/http's Transport and ReverseProxy,
// never the head without its last fields.
func TestH2CRelayResponseHeadersTooLarge(t *testing.T) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			for i := range 260 { // 260 × 4,037 bytes: just over 1 MiB
				w.Header().Set(fmt.Sprintf("x-h%d", i), strings.Repeat("v", 4000))
			}
			w.Header().Set("x-last", "here")
		}
		io.WriteString(w, "body")
	}), Protocols: new(http.Protocols)}
	w := h2cAppBehindAgent(t, srv)
	rt, _ := h2cCaller(t, w)
	a := h2cDo(rt, http.MethodGet, "http://"+w.front+"/big", nil)
	if a.err != nil || a.status != http.StatusBadGateway {
		t.Errorf("a response head over 1 MiB: %d %.60q (%v), want the agent's 502", a.status, a.body, a.err)
	}
	if a := h2cDo(rt, http.MethodGet, "http://"+w.front+"/", nil); a.err != nil || string(a.body) != "body" {
		t.Errorf("after it: %q (%v)", a.body, a.err)
	}
}

// TestH2CRelayBoundsHeaderBlocks (CVE-2023-45288): a header block that
// never ends, CONTINUATION after CONTINUATION, is bounded while it is
// read (the Framer's MaxHeaderListSize, before decoding): the connection
// ends once it is over, not when the caller stops.
func TestH2CRelayBoundsHeaderBlocks(t *testing.T) {
	rc := h2cRawAgent(t)
	rc.encBuf.Reset()
	for _, f := range []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "web"}, {Name: ":path", Value: "/"}} {
		_ = rc.enc.WriteField(f)
	}
	if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.encBuf.Bytes()}); err != nil {
		t.Fatal(err)
	}
	// Fields of 1 KiB each, never indexed: 16 per frame.
	rc.encBuf.Reset()
	for i := range 16 {
		_ = rc.enc.WriteField(hpack.HeaderField{Name: fmt.Sprintf("x-%02d", i), Value: strings.Repeat("v", 990), Sensitive: true})
	}
	frag := rc.encBuf.Bytes()
	go func() {
		for sent := 0; sent < 4<<20; sent += len(frag) { // 4 MiB: the limit is 1 MiB
			if rc.fr.WriteContinuation(1, false, frag) != nil {
				return
			}
		}
	}()
	rc.wantGoAway(t, rc.await(10*time.Second, isGoAway), http2.ErrCodeProtocol, "endless CONTINUATION")
}

// TestH2CRelayRefusesStreamsOverItsLimit: streams past the 250 the relay
// advertises are refused (REFUSED_STREAM: the caller may retry), and
// cost the app nothing; those open are served.
func TestH2CRelayRefusesStreamsOverItsLimit(t *testing.T) {
	rc := h2cRawAgent(t)
	for i := range uint32(260) {
		if err := rc.headers(2*i+1, "/hold"); err != nil {
			t.Fatal(err)
		}
	}
	refused, answered := map[uint32]bool{}, 0
	for refused[2*259+1] == false || answered < 250 {
		f := rc.await(5*time.Second, anyFrame)
		switch {
		case f == nil:
			t.Fatalf("%d streams refused, %d answered; want 10 and 250", len(refused), answered)
		case f.typ == http2.FrameRSTStream:
			if f.code != http2.ErrCodeRefusedStream || f.stream <= 2*249+1 {
				t.Fatalf("%v, want REFUSED_STREAM past the 250th stream", f)
			}
			refused[f.stream] = true
		case f.typ == http2.FrameHeaders:
			answered++
		}
	}
	if len(refused) != 10 {
		t.Errorf("%d streams refused, want 10", len(refused))
	}
}

// TestH2CRelayEndsWithEitherSide: a caller that goes away mid-stream
// ends the app's request (the relay's connection to it closes); an app
// whose connection dies mid-answer resets the caller's stream, and the
// caller's connection goes on.
func TestH2CRelayEndsWithEitherSide(t *testing.T) {
	gone, die := make(chan struct{}, 1), make(chan struct{})
	var appConn net.Conn
	var mu sync.Mutex
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/wait":
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			gone <- struct{}{}
		case "/die":
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-die // the caller has the head
			mu.Lock()
			appConn.Close()
			mu.Unlock()
		}
	}), Protocols: new(http.Protocols), ConnState: func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			appConn = c
			mu.Unlock()
		}
	}}
	w := h2cAppBehindAgent(t, srv)
	rc := dialH2CRaw(t, w)
	if err := rc.headers(1, "/wait"); err != nil {
		t.Fatal(err)
	}
	if f := rc.await(3*time.Second, isFrame(http2.FrameHeaders, 1)); f == nil || f.typ != http2.FrameHeaders {
		t.Fatal("no answer on stream 1")
	}
	rc.c.Close()
	select {
	case <-gone:
	case <-time.After(3 * time.Second):
		t.Error("the app's request still runs after its caller went away")
	}
	rc = dialH2CRaw(t, w)
	if err := rc.headers(1, "/die"); err != nil {
		t.Fatal(err)
	}
	if f := rc.await(3*time.Second, isFrame(http2.FrameHeaders, 1)); f == nil || f.status != "200" {
		t.Fatalf("/die: %v, want its 200", f)
	}
	close(die)
	f := rc.await(3*time.Second, isFrame(http2.FrameRSTStream, 0))
	if f == nil || f.typ != http2.FrameRSTStream || f.stream != 1 {
		t.Errorf("the app's connection died mid-answer: %v, want RST_STREAM on stream 1", f)
	}
	if err := rc.headers(3, "/"); err != nil {
		t.Fatal(err)
	}
	f = rc.await(3*time.Second, isFrame(http2.FrameHeaders, 3))
	if f == nil || f.status != "200" {
		t.Errorf("a new stream after it: %v, want a 200", f)
	}
}

// TestH2CRelayCallerNotReadingHoldsNoRemoval: a caller that stops
// reading (here while it sends PINGs) holds its relay's writes, and the
// lock they are made under, until it reads or goes away; removing an
// intercept whose process that relay has a connection to must not wait
// for it (it held up the owner's session, and the agent's shutdown).
func TestH2CRelayCallerNotReadingHoldsNoRemoval(t *testing.T) {
	app, _ := h2cApp(t, h2cTestHandler("app", nil))
	w := startAgent(t, func(c *agent.Config) {
		c.Listeners = []agent.PortMap{{Listen: freePort(t), App: uint16(app.Addr().(*net.TCPAddr).Port)}}
	})
	local, _ := h2cApp(t, h2cTestHandler("alice", nil))
	alice, _ := openClient(t, w, "alice@laptop", tunnel.Config{})
	if err := httpIntercept(t, alice, "web", w.appPort, local, "x-dev=alice"); err != nil {
		t.Fatal(err)
	}
	rc := dialH2CRaw(t, w)
	if err := rc.headers(1, "/", hpack.HeaderField{Name: "x-dev", Value: "alice"}); err != nil {
		t.Fatal(err)
	}
	if f := rc.await(3*time.Second, isFrame(http2.FrameHeaders, 1)); f == nil || f.status != "200" {
		t.Fatalf("alice's request: %v, want her 200", f)
	}
	for { // until the relay stops reading: its writes wait
		_ = rc.c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		var ne net.Error
		if err := rc.fr.WritePing(false, [8]byte{1}); errors.As(err, &ne) && ne.Timeout() {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := alice.RemoveIntercept(ctx, "web"); err != nil {
		t.Errorf("removing alice's intercept while a caller does not read: %v", err)
	}
}

// zeroStreamsApp is an h2c app that allows its first connection (the
// agent's probe) 100 streams and the others none (SETTINGS_MAX_CONCURRENT_STREAMS
// 0, as RFC 9113 allows for a while), refusing their streams; open
// counts its connections still open.
func zeroStreamsApp(t *testing.T) (net.Listener, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	open, accepted := new(atomic.Int32), 0
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted++
			limit := uint32(0)
			if accepted == 1 {
				limit = 100
			}
			open.Add(1)
			wg.Go(func() {
				defer open.Add(-1)
				defer c.Close()
				stop := context.AfterFunc(t.Context(), func() { c.Close() })
				defer stop()
				serveZeroStreams(c, limit)
			})
		}
	}()
	return ln, open
}

func serveZeroStreams(c net.Conn, limit uint32) {
	if _, err := io.ReadFull(c, make([]byte, len(http2.ClientPreface))); err != nil {
		return
	}
	fr := http2.NewFramer(c, c)
	var enc bytes.Buffer
	hpack.NewEncoder(&enc).WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	_ = fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: limit})
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			if limit == 0 {
				_ = fr.WriteRSTStream(f.StreamID, http2.ErrCodeRefusedStream)
			} else {
				_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: enc.Bytes(), EndStream: true, EndHeaders: true})
			}
		}
	}
}

// TestH2CRelayClosesConnectionsThatTakeNoStreams: an app that allows a
// connection no streams (SETTINGS_MAX_CONCURRENT_STREAMS 0) has its
// streams refused, and each retry goes to a new connection; those that
// take none are closed once idle, not kept for the caller's lifetime.
func TestH2CRelayClosesConnectionsThatTakeNoStreams(t *testing.T) {
	app, open := zeroStreamsApp(t)
	w := startAgent(t, func(c *agent.Config) {
		c.Listeners = []agent.PortMap{{Listen: freePort(t), App: uint16(app.Addr().(*net.TCPAddr).Port)}}
	})
	alice, _ := openClient(t, w, "alice@laptop", tunnel.Config{})
	if err := httpIntercept(t, alice, "web", w.appPort, nameServer(t, "alice"), "x-dev=alice"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "the probe's connection closes", func() bool { return open.Load() == 0 })
	rc := dialH2CRaw(t, w)
	for i := range uint32(10) {
		if err := rc.headers(2*i+1, "/"); err != nil {
			t.Fatal(err)
		}
		if f := rc.await(3*time.Second, isFrame(http2.FrameRSTStream, 2*i+1)); !f.is(http2.FrameRSTStream, http2.ErrCodeRefusedStream) {
			t.Fatalf("request %d: %v, want REFUSED_STREAM", i, f)
		}
	}
	eventually(t, 3*time.Second, "at most one connection to the app left open", func() bool { return open.Load() <= 1 })
}

// TestH2CRelayEnforcesTheConnectionWindow: a caller whose uploads the
// app does not read is given the relay's connection window, what the
// relay wrote to the app, and what it lends for what it holds (4 MiB) —
// and a byte past that ends the connection with FLOW_CONTROL_ERROR.
func TestH2CRelayEnforcesTheConnectionWindow(t *testing.T) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/sink" {
			<-r.Context().Done() // reads nothing of the body
		}
	}), Protocols: new(http.Protocols)}
	w := h2cAppBehindAgent(t, srv)
	rc := dialH2CRaw(t, w)
	granted, sent := 65535, 0 // the protocol's initial connection window
	take := func(f *h2cRawFrame) {
		if f.typ == http2.FrameWindowUpdate && f.stream == 0 {
			granted += f.n
		}
	}
	chunk := make([]byte, 16<<10)
	id, onStream := uint32(1), 0
	for {
		for sent+len(chunk) > granted {
			f := rc.await(500*time.Millisecond, func(f *h2cRawFrame) bool { take(f); return isGoAway(f) || granted >= sent+len(chunk) })
			if f != nil && isGoAway(f) {
				t.Fatalf("GOAWAY after %d bytes within a window of %d: %v", sent, granted, f)
			}
			if f == nil && sent+len(chunk) > granted {
				break
			}
		}
		if sent+len(chunk) > granted {
			break
		}
		if onStream == 0 {
			if err := rc.post(id, "/sink"); err != nil {
				t.Fatal(err)
			}
		}
		if err := rc.fr.WriteData(id, false, chunk); err != nil {
			t.Fatal(err)
		}
		sent += len(chunk)
		if onStream += len(chunk); onStream == 1<<20-64<<10 { // within the stream's window
			id, onStream = id+2, 0
		}
	}
	// 1 MiB window, 1 MiB written to the app (its connection window), 4 MiB lent.
	if want := 6 << 20; granted < want-(256<<10) || granted > want {
		t.Errorf("granted %d bytes on the connection, want about %d", granted, want)
	}
	if err := rc.fr.WriteData(id, false, chunk); err != nil {
		t.Fatal(err)
	}
	rc.wantGoAway(t, rc.await(3*time.Second, func(f *h2cRawFrame) bool { take(f); return isGoAway(f) }), http2.ErrCodeFlowControl, "a frame past the connection window")
}
