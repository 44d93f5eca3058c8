package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"
)

// The HTTP/1.1 connection loop: a cleartext HTTP/1.1 connection is served
// on its own goroutine, request after request: the head parsed once
// (http.ReadRequest), routed, written to a pooled connection to the
// backend, the response read (http.ReadResponse) and written back, bodies
// streamed. What it does not proxy itself (httpplan.go) it hands, with the
// rest of the connection, to the port's net/http server, which serves it
// as before through ReverseProxy: upgrades, HTTP/2 conversions, preview
// links, mirrored ports, and requests net/http would refuse.
//
// net/http's Transport crossed three goroutines per request (the
// handler's, its writeLoop and readLoop); here one goroutine does it all,
// plus one for a request body that has not fully arrived with its head.

// headerTimeout bounds the reading of a request head once its first byte
// arrived (the server's ReadHeaderTimeout).
const headerTimeout = 30 * time.Second

// maxHeadBytes is net/http's limit on a request head; a longer one is
// handed to its server, which answers 431.
const maxHeadBytes = http.DefaultMaxHeaderBytes + 4096

var (
	errHeadTooLarge   = errors.New("request head too large")
	errRespTooLarge   = errors.New("response head too large")
	errBodyUnfinished = errors.New("request body not fully sent")
	errNoUpgrade      = errors.New("backend switched protocols unasked")
)

// aLongTimeAgo unblocks a read at once.
var aLongTimeAgo = time.Unix(1, 0)

// headRecorder keeps the bytes read from the connection while a request
// head is parsed, so that the connection can be handed to net/http's
// server with the head unread.
type headRecorder struct {
	r     io.Reader
	first []byte // the sniffed first bytes, read again first
	on    bool
	buf   []byte
	err   error // the connection's read error, if any
}

func (h *headRecorder) Read(p []byte) (int, error) {
	var n int
	var err error
	if len(h.first) > 0 {
		n = copy(p, h.first)
		h.first = h.first[n:]
	} else {
		n, err = h.r.Read(p)
		h.err = err
	}
	if h.on && n > 0 {
		h.buf = append(h.buf, p[:n]...)
		if len(h.buf) > maxHeadBytes && err == nil {
			err = errHeadTooLarge
		}
	}
	return n, err
}

// h1Conn is one downstream connection served by the loop.
type h1Conn struct {
	hp  *httpPort
	c   net.Conn
	rec headRecorder
	br  *bufio.Reader
	bw  *bufio.Writer
	x   exchange // the request in flight

	// pending aliases the reader's buffer as it was before the head was
	// parsed, when the whole head was in it (head is that head, blank line
	// excluded, when parseRequestHead took it: it is passed through raw):
	// valid until the next read from the connection.
	pending, head []byte
	listed        []string // the caller's Connection tokens, with head
	te            bool     // the caller sent "Te: trailers", with head

	// inflight is the upstream connection of the request in flight, closed
	// with the connection: shutdown's closeAll ends what it waits for.
	inflight atomic.Pointer[upConn]
	closed   atomic.Bool
}

// Close closes the connection and the upstream one its request waits on.
func (hc *h1Conn) Close() error {
	hc.closed.Store(true)
	err := hc.c.Close()
	if uc := hc.inflight.Load(); uc != nil {
		_ = uc.c.Close()
	}
	return err
}

// use makes uc the connection in flight; false if hc was closed meanwhile.
func (hc *h1Conn) use(uc *upConn) bool {
	hc.inflight.Store(uc)
	if hc.closed.Load() {
		_ = uc.c.Close()
		return false
	}
	return true
}

var (
	h1Readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	h1Writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
)

// serveHTTP1 serves c, whose first bytes (already read) are first, until
// it closes or is handed to net/http's server.
func (hp *httpPort) serveHTTP1(c net.Conn, first []byte) {
	hc := &h1Conn{hp: hp, c: c}
	hc.rec.r, hc.rec.first = c, first
	hc.br = h1Readers.Get().(*bufio.Reader)
	hc.br.Reset(&hc.rec)
	hc.bw = h1Writers.Get().(*bufio.Writer)
	hc.bw.Reset(c)
	defer hc.release()
	if !hp.a.conns.add(hc) { // shutting down
		_ = c.Close()
		return
	}
	defer hp.a.conns.done(hc)
	for {
		req, err := hc.readRequest()
		var reason handOffReason
		switch {
		case errors.Is(err, errHandOff):
			reason = "unparsed"
		case err != nil:
			_ = c.Close()
			return
		default:
			reason = hc.serve(req)
		}
		switch reason {
		case proxyHere:
			continue
		case closeConn:
			_ = c.Close()
		default:
			hc.handOff()
		}
		return
	}
}

// closeConn: the request was served, the connection ends.
const closeConn handOffReason = "close"

var errHandOff = errors.New("hand off")

// headEnd ends a request head.
var headEnd = []byte("\r\n\r\n")

func (hc *h1Conn) release() {
	hc.br.Reset(nil)
	h1Readers.Put(hc.br)
	hc.bw.Reset(nil)
	h1Writers.Put(hc.bw)
}

// readRequest reads the next request head, waiting without a deadline for
// its first byte. An error wrapping errHandOff is a head net/http should
// answer (malformed, too large); others end the connection.
func (hc *h1Conn) readRequest() (*http.Request, error) {
	if _, err := hc.br.Peek(1); err != nil {
		return nil, err
	}
	pending, _ := hc.br.Peek(hc.br.Buffered())
	// A head that came whole in one read (the common case) needs no
	// deadline, nor copying for a hand-off: nothing more is read to parse it.
	end := bytes.Index(pending, headEnd)
	whole := end >= 0
	hc.rec.buf, hc.rec.err, hc.pending, hc.head = hc.rec.buf[:0], nil, nil, nil
	if whole {
		hc.pending = pending
		if req := parseRequestHead(pending[:end+2], hc.br); req != nil {
			hc.head = pending[:end+2]
			_, _ = hc.br.Discard(end + len(headEnd))
			return req, nil
		}
		// Not passed through raw: a head only http.ReadRequest reads (bare
		// LF line ends, folded lines) may end before the first CRLF CRLF,
		// and its lines are not those the backend would read.
	} else {
		hc.rec.buf = append(hc.rec.buf, pending...)
		_ = hc.c.SetReadDeadline(time.Now().Add(headerTimeout))
	}
	hc.rec.on = true
	req, err := http.ReadRequest(hc.br)
	hc.rec.on = false
	if !whole {
		_ = hc.c.SetReadDeadline(time.Time{})
	}
	if err != nil {
		// A head cut by the deadline or the caller's going may be reported
		// as malformed (a partial line): the connection's error decides.
		if rerr := hc.rec.err; rerr != nil {
			err = rerr
		}
		var ne net.Error
		if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", errHandOff, err)
	}
	return req, nil
}

// handOff gives the connection, its unread bytes first, to the port's
// net/http server and waits until the server is done with it.
func (hc *h1Conn) handOff() {
	if err := hc.bw.Flush(); err != nil {
		_ = hc.c.Close()
		return
	}
	prefix := append(append([]byte(nil), hc.pending...), hc.rec.buf...)
	sc := &servedConn{Conn: hc.c, prefix: prefix, closed: make(chan struct{})}
	if !hc.hp.plain.push(sc) {
		_ = hc.c.Close()
		return
	}
	<-sc.closed
}

// serve routes one request and proxies it, or says why not.
func (hc *h1Conn) serve(req *http.Request) handOffReason {
	hp := hc.hp
	if req.Header.Get("Upgrade") == "h2c" { // as ServeHTTP does
		req.Header.Del("Upgrade")
		req.Header.Del("Http2-Settings")
	}
	if why := requestShape(req); why != proxyHere {
		return why
	}
	st := hp.a.reg.lookup(hp.port)
	ic, armed := matchRequest(st, req)
	b, route := hp.app, routeApp
	if ic != nil && !ic.owner.session.IsClosed() {
		var err error
		route = routeClient
		if b, err = ic.http.localBackend(context.Background()); err != nil {
			hp.a.m.httpProxyErrors.WithLabelValues(routeClient).Inc()
			hp.a.log.Info("intercepted request not delivered", zap.String("intercept", ic.name), zap.String("holder", ic.owner.user), zap.Error(err))
			hc.writeError(fmt.Sprintf("detour: intercept %q of %s: %v", ic.name, ic.owner.user, err))
			return closeConn
		}
	}
	if why := routeShape(armed != nil, st != nil && len(st.httpMirrors) > 0, b.proto); why != proxyHere {
		return why
	}
	if route == routeApp {
		hp.routedToApp.Inc()
	} else {
		hp.routedToClient.Inc()
	}
	if !hc.proxy(req, b.pool, route) || req.Close {
		return closeConn
	}
	return proxyHere
}

// writeError answers 502 with msg, as http.Error does, and says the
// connection closes: the request's body, if any, was not read.
func (hc *h1Conn) writeError(msg string) {
	body := msg + "\n"
	hc.bw.WriteString("HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nContent-Length: ")
	hc.bw.WriteString(strconv.Itoa(len(body)))
	hc.bw.WriteString("\r\n\r\n")
	hc.bw.WriteString(body)
	_ = hc.bw.Flush()
}

// upstreamFailed counts and logs a request its backend failed and answers
// it with 502, as proxyError does on the ReverseProxy path.
func (hc *h1Conn) upstreamFailed(req *http.Request, route string, err error) {
	hp := hc.hp
	hp.a.m.httpProxyErrors.WithLabelValues(route).Inc()
	hp.a.log.Info("request failed", zap.String("route", route), zap.Uint16("port", hp.port), zap.String("path", req.URL.Path), zap.Error(err))
	hc.writeError("detour: " + route + " did not answer: " + err.Error())
}

// exchange is one request in flight on an upstream connection.
type exchange struct {
	uc     *upConn
	sent   chan error // the body writer's result; nil when the body went with the head
	broken bool       // uc must not be reused
	raw    rawResponse
	isRaw  bool // the response head is raw, still in uc's buffer; no *http.Response
}

// proxy sends req to the backend behind pool and its response back. It
// reports whether the downstream connection can carry the next request.
func (hc *h1Conn) proxy(req *http.Request, pool *h1Pool, route string) bool {
	if hc.head != nil {
		hc.listed = connectionTokens(req.Header["Connection"])
		hc.te = httpguts.HeaderValuesContainsToken(req.Header["Te"], "trailers")
		req.URL.RawQuery = cleanQuery(req.URL.RawQuery)
	} else {
		outboundHeader(req)
	}
	x, res, err := hc.roundTrip(req, pool)
	defer hc.inflight.Store(nil)
	if err != nil {
		hc.upstreamFailed(req, route, err)
		if x != nil {
			hc.abort(x)
		}
		return false
	}
	var ok, closed bool
	if x.isRaw {
		ok, closed = hc.writeRawResponse(req, x), x.raw.close
	} else {
		ok, closed = hc.writeResponse(req, x, res), res.Close
	}
	if !hc.finish(x, ok) {
		return false
	}
	if x.broken || closed {
		_ = x.uc.c.Close()
	} else {
		pool.put(x.uc)
	}
	return ok
}

// roundTrip sends req on a pooled connection and reads the response head,
// forwarding 1xx responses. A pooled connection is checked first: one the
// backend closed, or sent bytes on that no request asked for (past the
// previous response's framing: they would be the next caller's answer, as
// net/http's Transport also refuses), is not used. An idempotent request
// without a body that fails on a reused connection before any answer
// (the backend closed it meanwhile) is sent again once on a new one.
func (hc *h1Conn) roundTrip(req *http.Request, pool *h1Pool) (*exchange, *http.Response, error) {
	ctx := context.Background()
	replay := req.ContentLength == 0 && replayable(req)
	uc, reused, err := pool.get(ctx)
	if err == nil && reused && !idleAlive(uc) {
		_ = uc.c.Close()
		uc, reused, err = nil, false, nil
		uc, err = pool.fresh(ctx)
	}
	if err != nil {
		return nil, nil, err
	}
	if !hc.use(uc) {
		return nil, nil, net.ErrClosed
	}
	x := &hc.x
	*x = exchange{uc: uc}
	res, err := hc.send(req, x)
	if err != nil && reused && replay && x.sent == nil {
		_ = uc.c.Close()
		if uc, err = pool.fresh(ctx); err != nil {
			return nil, nil, err
		}
		if !hc.use(uc) {
			return nil, nil, net.ErrClosed
		}
		*x = exchange{uc: uc}
		res, err = hc.send(req, x)
	}
	return x, res, err
}

// replayable: a request that may be sent again when its connection
// fails before the answer, as net/http's Transport decides: an
// idempotent method, or an Idempotency-Key. Another (a POST, a DELETE)
// may have been acted on by a backend that then dropped the connection.
func replayable(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return req.Header["Idempotency-Key"] != nil || req.Header["X-Idempotency-Key"] != nil
}

// send writes req to x's connection (its body on a goroutine of its own
// unless it arrived with the head) and reads the final response head.
func (hc *h1Conn) send(req *http.Request, x *exchange) (*http.Response, error) {
	w := x.uc.bw
	if hc.head != nil {
		writeRawRequestHead(w, req, hc.head, hc.listed, hc.te)
	} else {
		writeRequestHead(w, req)
	}
	switch {
	case req.ContentLength == 0:
	case req.ContentLength > 0 && req.ContentLength <= int64(hc.br.Buffered()):
		if err := copyBody(w, req.Body, nil, false); err != nil {
			return nil, err
		}
	default:
		x.sent = make(chan error, 1)
		go func(uc *upConn) {
			err := hc.sendBody(w, req)
			if err != nil { // the backend's request ends too: it would wait for the rest
				_ = uc.c.Close()
			}
			x.sent <- err
		}(x.uc)
	}
	if x.sent == nil {
		if err := w.Flush(); err != nil {
			return nil, err
		}
	}
	// The response heads (1xx included) are bounded as the h2c relay's
	// (maxHeadBytes, with what was read ahead of the body): a backend
	// cannot make the agent hold an endless head.
	x.uc.lr.n = maxHeadBytes
	defer func() { x.uc.lr.n = 0 }()
	for {
		if _, err := x.uc.br.Peek(1); err != nil {
			return nil, err
		}
		if req.Method != http.MethodHead {
			if x.raw, x.isRaw = peekRawResponse(x.uc.br); x.isRaw {
				return nil, nil
			}
		}
		res, err := http.ReadResponse(x.uc.br, req)
		switch {
		case err != nil:
			return nil, err
		case res.StatusCode == http.StatusSwitchingProtocols:
			return nil, errNoUpgrade
		case res.StatusCode >= 200:
			return res, nil
		}
		writeResponseHead(hc.bw, res, -1, false) // 1xx: informational, forwarded
		if err := hc.bw.Flush(); err != nil {
			return nil, err
		}
	}
}

// sendBody streams req's body to the backend, flushing whenever the
// caller's next bytes have not arrived yet (full duplex: an echo gets each
// chunk back before the caller sends the next).
func (hc *h1Conn) sendBody(w *bufio.Writer, req *http.Request) error {
	chunked := req.ContentLength < 0
	if err := copyBody(w, req.Body, hc.br, chunked); err != nil {
		return err
	}
	if chunked {
		writeTrailer(w, req.Trailer)
	}
	return w.Flush()
}

// writeResponse writes res to the caller, its body streamed (flushed
// whenever the backend's next bytes have not arrived yet), and reports
// whether all of it was written.
func (hc *h1Conn) writeResponse(req *http.Request, x *exchange, res *http.Response) bool {
	removeHopByHop(res.Header)
	bodyless := req.Method == http.MethodHead || res.StatusCode == http.StatusNoContent || res.StatusCode == http.StatusNotModified
	chunked := !bodyless && res.ContentLength < 0
	if req.Close {
		res.Header["Connection"] = []string{"close"}
	}
	length := int64(-1) // the header's own, if any, for a response without a body
	if !bodyless && !chunked {
		delete(res.Header, "Content-Length")
		length = res.ContentLength
	}
	writeResponseHead(hc.bw, res, length, chunked)
	if !bodyless {
		if err := copyBody(hc.bw, res.Body, x.uc.br, chunked); err != nil {
			x.broken = true
			return false
		}
		if chunked {
			writeTrailer(hc.bw, res.Trailer)
		}
	}
	_ = res.Body.Close()
	return hc.bw.Flush() == nil
}

// writeRawResponse passes x's raw response head through, then its body,
// and reports whether all of it was written.
func (hc *h1Conn) writeRawResponse(req *http.Request, x *exchange) bool {
	writeRawResponseHead(hc.bw, &x.raw, req.Close)
	ubr := x.uc.br
	_, _ = ubr.Discard(x.raw.size)
	body := io.LimitedReader{R: ubr, N: x.raw.length}
	if err := copyBody(hc.bw, &body, ubr, false); err != nil || body.N > 0 {
		x.broken = true
		return false
	}
	return hc.bw.Flush() == nil
}

// finish waits for the request body's writer, if any. It reports whether
// the exchange ended cleanly: the response written (ok) and the body sent.
// A body still being sent after the response is cut off: the downstream
// connection then ends, as where the rest of the body ends is unknown.
func (hc *h1Conn) finish(x *exchange, ok bool) bool {
	if !ok {
		hc.abort(x)
		return false
	}
	if x.sent == nil {
		return true
	}
	t := time.NewTimer(50 * time.Millisecond)
	defer t.Stop()
	select {
	case err := <-x.sent:
		x.sent = nil
		if err == nil {
			return true
		}
	case <-t.C:
	}
	hc.abort(x)
	return false
}

// abort ends an exchange that went wrong: the upstream connection closed,
// the body writer (if still running) stopped and waited for.
func (hc *h1Conn) abort(x *exchange) {
	_ = x.uc.c.Close()
	if x.sent != nil {
		_ = hc.c.SetReadDeadline(aLongTimeAgo)
		<-x.sent
		x.sent = nil
	}
}

// outboundHeader turns the caller's request header into the backend's as
// ReverseProxy does (hop-by-hop fields dropped, "Te: trailers" kept,
// unparsable query parameters dropped), forwarding fields kept as they came.
func outboundHeader(req *http.Request) {
	te := httpguts.HeaderValuesContainsToken(req.Header["Te"], "trailers")
	removeHopByHop(req.Header)
	if te {
		req.Header["Te"] = []string{"trailers"}
	}
	delete(req.Header, "Content-Length") // framing written by writeRequestHead
	req.URL.RawQuery = cleanQuery(req.URL.RawQuery)
}
