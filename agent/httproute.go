package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/tunnel"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// httpPort routes the requests that arrive for one app port while it has
// http intercepts: each connection is sniffed, served by net/http (HTTP/1.1,
// h2c, or TLS when a terminating certificate is mounted), and each request
// goes to the intercept whose rules it matches, or to the app.
type httpPort struct {
	a      *Agent
	port   uint16
	app    *backend
	plain  *connListener
	secure *connListener // nil without a terminating certificate
	srvs   []*http.Server

	routedToApp, routedToClient prometheus.Counter
	h2cRelayed, h2cFallback     prometheus.Counter
}

// httpPortFor returns the port's router, creating it (and probing the app)
// on the first http intercept. settings are that intercept's: the Service's
// appProtocol and the strategy it carries decide how the app is reached.
// The probe runs without httpMu held: the data path takes it for every
// connection on an http port, and a probe may take seconds.
func (a *Agent) httpPortFor(ctx context.Context, port uint16, s tunnel.HTTPSettings) (*httpPort, error) {
	if hp, err := a.existingHTTPPort(port); hp != nil || err != nil {
		return hp, err
	}
	hp, err := a.newHTTPPort(ctx, port, s)
	if err != nil {
		return nil, err
	}
	a.httpMu.Lock()
	defer a.httpMu.Unlock()
	switch prev := a.httpPorts[port]; {
	case a.httpClosed:
		hp.close()
		return nil, a.shuttingDown()
	case prev != nil: // another session's create won the race
		hp.close()
		return prev, nil
	}
	a.httpPorts[port] = hp
	return hp, nil
}

func (a *Agent) existingHTTPPort(port uint16) (*httpPort, error) {
	a.httpMu.Lock()
	defer a.httpMu.Unlock()
	if a.httpClosed {
		return nil, a.shuttingDown()
	}
	return a.httpPorts[port], nil
}

func (a *Agent) shuttingDown() error {
	return fmt.Errorf("agent in pod %s is shutting down: retry once its replacement is ready: %w", a.cfg.PodName, tunnel.ErrShuttingDown)
}

func (a *Agent) newHTTPPort(ctx context.Context, port uint16, s tunnel.HTTPSettings) (*httpPort, error) {
	appTLS, err := a.tls.toApp()
	if err != nil {
		return nil, err
	}
	term, err := a.tls.terminating()
	if err != nil {
		return nil, err
	}
	dial := func(ctx context.Context) (net.Conn, error) {
		d := net.Dialer{Timeout: a.cfg.DialTimeout}
		return d.DialContext(ctx, "tcp", net.JoinHostPort(a.cfg.AppHost, strconv.Itoa(int(port))))
	}
	proto, probe := knownProtocol(s.AppProtocol, s.Strategy, appTLS != nil)
	if proto.tls && appTLS == nil {
		// The Service says https, but no Secret was mounted: the agent can
		// neither read the requests' headers nor speak TLS to the app.
		return nil, fmt.Errorf("port %d's Service port has appProtocol %q, but pod %s has no %s: without the certificate the agent cannot read the requests to route them; annotate the workload with %s=SECRET, or intercept with --mechanism tcp: %w",
			port, s.AppProtocol, a.cfg.PodName, annotations.TerminatingTLSSecret, annotations.TerminatingTLSSecret, tunnel.ErrBadRequest)
	}
	if probe {
		start := time.Now()
		var tlsCfg *tls.Config
		if proto.tls {
			tlsCfg = appTLS
		}
		proto, err = probeProtocol(ctx, dial, tlsCfg)
		if err != nil {
			a.log.Info("app protocol probe failed", zap.Uint16("port", port), zap.Error(err))
			return nil, fmt.Errorf("the app in pod %s does not speak HTTP on port %d (%v): intercept it with --mechanism tcp, or set the Service port's appProtocol: %w",
				a.cfg.PodName, port, err, tunnel.ErrAppNotHTTP)
		}
		a.log.Info("app protocol probed", zap.Uint16("port", port), zap.Stringer("protocol", proto), zap.Duration("took", time.Since(start)))
	}
	hp := &httpPort{a: a, port: port, plain: newConnListener(),
		routedToApp: a.m.httpRequests.WithLabelValues(routeApp), routedToClient: a.m.httpRequests.WithLabelValues(routeClient),
		h2cRelayed: a.m.h2cStreams.WithLabelValues("relay"), h2cFallback: a.m.h2cStreams.WithLabelValues("fallback")}
	hp.app = newBackend(proto, dial, appTLS, a.log, hp.proxyError(routeApp))
	hp.srvs = append(hp.srvs, hp.server(hp.plain, false))
	if term != nil {
		hp.secure = newConnListener()
		hp.srvs = append(hp.srvs, hp.server(tlsListener{hp.secure, term}, true))
	}
	return hp, nil
}

// httpPort returns the port's router if it has one.
func (a *Agent) httpPort(port uint16) *httpPort {
	a.httpMu.Lock()
	defer a.httpMu.Unlock()
	return a.httpPorts[port]
}

func (hp *httpPort) server(ln net.Listener, tlsOn bool) *http.Server {
	srv := &http.Server{
		Handler:           hp,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          zap.NewStdLog(hp.a.log.Named("http")),
		Protocols:         new(http.Protocols),
	}
	srv.Protocols.SetHTTP1(true)
	if tlsOn {
		srv.Protocols.SetHTTP2(true)
	} else {
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	go func() { _ = srv.Serve(ln) }()
	return srv
}

func (hp *httpPort) close() {
	hp.plain.Close()
	if hp.secure != nil {
		hp.secure.Close()
	}
	for _, s := range hp.srvs {
		_ = s.Close()
	}
	hp.app.close()
}

// serveConn sniffs c and serves it: cleartext HTTP/1.1 on the connection
// loop (httpconn.go), which hands what it does not proxy itself to the
// port's net/http server, h2c to an h2c app on the relay (h2relay.go),
// TLS and other h2c to that server; it returns when the connection is
// done. What is not HTTP (or is TLS with no certificate to terminate it)
// goes to the app as raw bytes.
func (hp *httpPort) serveConn(c net.Conn) {
	var first [1]byte
	if _, err := c.Read(first[:]); err != nil {
		return
	}
	sc := &servedConn{Conn: c, prefix: first[:], closed: make(chan struct{})}
	target := hp.plain
	switch b := first[0]; {
	case b == 0x16 && hp.secure != nil: // a TLS handshake record
		target = hp.secure
	case b == 'P' && h2cRelayed(hp.app.proto): // "PRI": the h2c preface, or POST, PUT…
		h2c, read, err := sniffConn(sc, headerTimeout)
		switch {
		case err != nil:
		case h2c:
			hp.serveH2C(c, io.MultiReader(bytes.NewReader(read), c))
		default:
			hp.serveHTTP1(c, read)
		}
		return
	case b >= 'A' && b <= 'Z': // an HTTP/1 method, or the HTTP/2 preface "PRI"
		hp.serveHTTP1(c, first[:]) // hands what it does not serve to hp.plain
		return
	default:
		hp.a.m.httpUnroutable.Inc()
		hp.a.toApp(sc, hp.port)
		return
	}
	if !target.push(sc) {
		return
	}
	<-sc.closed
}

func (hp *httpPort) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var guard *bodyGuard
	if r.Body != nil && r.Body != http.NoBody {
		guard = &bodyGuard{ReadCloser: r.Body}
		r.Body = guard
		defer guard.stop(w)
	}
	if r.ProtoMajor == 1 {
		// Without it, Go's HTTP/1 server discards the unread request body
		// once the response starts: a backend that answers while the upload
		// runs (echo, gRPC-web, uploads with early replies) would get a
		// body with bytes missing, or the caller would wait forever.
		_ = http.NewResponseController(w).EnableFullDuplex()
	}
	if r.Header.Get("Upgrade") == "h2c" {
		// HTTP/1 → h2c upgrades are not relayed: the request is answered in
		// HTTP/1.1, which RFC 9113 allows.
		r.Header.Del("Upgrade")
		r.Header.Del("Http2-Settings")
	}
	st := hp.a.reg.lookup(hp.port)
	ic, armed := matchRequest(st, r)
	if armed != nil {
		// The preview link: the browser keeps the token as a cookie,
		// whichever backend answers this request (a path or method rule
		// may send the link's own page to the app).
		q := r.URL.Query()
		q.Del(tunnel.PreviewQuery)
		r.URL.RawQuery = q.Encode()
		http.SetCookie(w, &http.Cookie{Name: tunnel.PreviewCookie, Value: armed.http.settings.PreviewToken, Path: "/", MaxAge: previewCookieAge, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	}
	if st != nil && len(st.httpMirrors) > 0 {
		if finish := mirrorRequest(st.httpMirrors, r); finish != nil {
			// Copies never delay the answer (they are queued); the rest of a
			// body the backend did not read is read for them once answered.
			defer guard.awake(w, finish)
		}
	}
	if ic == nil || ic.owner.session.IsClosed() {
		hp.routedToApp.Inc()
		hp.app.proxy.ServeHTTP(w, r)
		return
	}
	hp.routedToClient.Inc()
	b, err := ic.http.localBackend(r.Context())
	if err != nil {
		hp.a.m.httpProxyErrors.WithLabelValues(routeClient).Inc()
		hp.a.log.Info("intercepted request not delivered", zap.String("intercept", ic.name), zap.String("holder", ic.owner.user), zap.Error(err))
		http.Error(w, fmt.Sprintf("detour: intercept %q of %s: %v", ic.name, ic.owner.user, err), http.StatusBadGateway)
		return
	}
	b.proxy.ServeHTTP(w, r)
}

// proxyError answers a request its backend failed with 502 at once: a
// client that vanished mid-request must never leave the caller hanging.
func (hp *httpPort) proxyError(route string) func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
			return // the caller went away; nobody to answer
		}
		hp.a.m.httpProxyErrors.WithLabelValues(route).Inc()
		hp.a.log.Info("request failed", zap.String("route", route), zap.Uint16("port", hp.port), zap.String("path", r.URL.Path), zap.Error(err))
		http.Error(w, "detour: "+route+" did not answer: "+err.Error(), http.StatusBadGateway)
	}
}

// matchRequest picks the intercept a request goes to: the first (most
// specific) whose preview token the request carries, in its query or its
// cookie, or whose header rules all match — and, either way, whose method
// and path rules do. armed is the intercept whose token came in the URL, so
// the response sets the cookie that keeps the browser routed.
//
// It runs for every request on an http port: header rules are checked
// first (they fail fast for other developers' requests), the path regex
// last, and nothing here allocates for header, method or path rules.
func matchRequest(st *portState, r *http.Request) (ic, armed *intercept) {
	if st == nil {
		return nil, nil
	}
	var token string
	var fromQuery bool
	if r.URL.RawQuery != "" {
		token = r.URL.Query().Get(tunnel.PreviewQuery)
		fromQuery = token != ""
	}
	if token == "" {
		if c, err := r.Cookie(tunnel.PreviewCookie); err == nil {
			token = c.Value
		}
	}
	for _, x := range st.http {
		s := &x.http.settings
		byToken := token != "" && s.PreviewToken == token
		if byToken && fromQuery {
			armed = x
		}
		if (byToken || headersMatch(r.Header, s.Match)) && requestLineMatches(r, s) {
			return x, armed
		}
	}
	return nil, armed
}

// requestLineMatches checks an intercept's method and path rules.
func requestLineMatches(r *http.Request, s *tunnel.HTTPSettings) bool {
	if len(s.Methods) > 0 && !slices.Contains(s.Methods, r.Method) {
		return false
	}
	return s.Path.Kind == "" || s.Path.Matches(r.URL.Path)
}

func headersMatch(h http.Header, rules []tunnel.HeaderMatch) bool {
	if len(rules) == 0 {
		return false
	}
	for i := range rules {
		m := &rules[i] // not copied: this runs per rule, per request
		found := false
		// Rules hold canonical names (tunnel.ParseHeaderMatch), so the map
		// is indexed directly, without canonicalising per request.
		key := m.Canonical
		if key == "" {
			key = textproto.CanonicalMIMEHeaderKey(m.Name)
		}
		if m.Member == "" {
			for _, v := range h[key] {
				if v == m.Value {
					found = true
					break
				}
			}
		} else {
			for _, v := range h[key] {
				if baggageHas(v, m.Member, m.Value) {
					found = true
					break
				}
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// baggageHas reports whether a W3C baggage header value (a comma-separated
// list of key=value members, each with optional ;properties, whitespace
// allowed around each part) has a member key whose value, percent-decoded,
// is value. It reads the header in place, without allocating.
func baggageHas(header, key, value string) bool {
	for header != "" {
		var member string
		if i := strings.IndexByte(header, ','); i >= 0 {
			member, header = header[:i], header[i+1:]
		} else {
			member, header = header, ""
		}
		if i := strings.IndexByte(member, ';'); i >= 0 {
			member = member[:i] // properties do not take part
		}
		k, v, ok := strings.Cut(member, "=")
		if ok && trimOWS(k) == key && percentDecodedEqual(trimOWS(v), value) {
			return true
		}
	}
	return false
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// percentDecodedEqual compares enc, percent-decoded, with plain. A '%' not
// followed by two hex digits stands for itself, as the baggage spec asks
// of a lenient reader.
func percentDecodedEqual(enc, plain string) bool {
	j := 0
	for i := 0; i < len(enc); i++ {
		c := enc[i]
		if c == '%' && i+2 < len(enc) && isHex(enc[i+1]) && isHex(enc[i+2]) {
			c = unhex(enc[i+1])<<4 | unhex(enc[i+2])
			i += 2
		}
		if j >= len(plain) || plain[j] != c {
			return false
		}
		j++
	}
	return j == len(plain)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// newHTTPIntercept prepares o's http intercept: the port's router (probing
// the app on the first one) and the way to the owner's local process.
func (a *Agent) newHTTPIntercept(ctx context.Context, o *owner, req tunnel.CreateIntercept, s tunnel.HTTPSettings) (*intercept, error) {
	hp, err := a.httpPortFor(ctx, req.Port, s)
	if err != nil {
		return nil, err
	}
	ic := &intercept{name: req.Name, port: req.Port, mechanism: tunnel.MechanismHTTP, owner: o}
	h := &httpIntercept{settings: s, appProtocol: hp.app.proto}
	localTLS := hp.app.proto.tls && !s.Plaintext
	var tlsCfg *tls.Config
	if localTLS {
		tlsCfg = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} //nolint:gosec // the developer's own process, reached through their authenticated tunnel
	}
	dial := func(ctx context.Context) (net.Conn, error) {
		return a.openIntercepted(ic, "")
	}
	errorHandler := hp.proxyError(routeClient)
	h.newLocal = func(ctx context.Context) (*backend, error) {
		proto, probe := localProtocol(s, localTLS)
		if probe {
			var err error
			if proto, err = probeProtocol(ctx, dial, tlsCfg); err != nil {
				return nil, fmt.Errorf("%w (is it listening, and on the port you gave?): %v", errLocalNotHTTP, err)
			}
			a.log.Info("local process protocol probed", zap.String("intercept", ic.name), zap.String("holder", o.user), zap.Stringer("protocol", proto))
		}
		return newBackend(proto, dial, tlsCfg, a.log, errorHandler), nil
	}
	ic.http = h
	return ic, nil
}

// localProtocol is knownProtocol for the local process: it speaks TLS
// only when the app does and --http-plaintext was not given, whatever the
// Service's appProtocol says (https with --http-plaintext is plain HTTP of
// a version to probe).
func localProtocol(s tunnel.HTTPSettings, localTLS bool) (httpProtocol, bool) {
	appProtocol := s.AppProtocol
	if p, _ := knownProtocol(appProtocol, s.Strategy, false); p.tls && !localTLS {
		appProtocol = ""
	}
	return knownProtocol(appProtocol, s.Strategy, localTLS)
}

// openIntercepted opens a stream to ic's owner for one connection.
func (a *Agent) openIntercepted(ic *intercept, source string) (net.Conn, error) {
	return ic.owner.openStream(tunnel.StreamIntercepted, ic, source)
}

// openStream opens a stream of kind (intercepted, or mirrored) to o for
// one connection of ic's.
func (o *owner) openStream(kind tunnel.StreamKind, ic *intercept, source string) (net.Conn, error) {
	st, err := o.session.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("client %s unreachable: %w", o.user, err)
	}
	hdr := tunnel.InterceptedHeader{Intercept: ic.name, Port: ic.port, Source: source}
	if err := tunnel.WriteStreamHeader(st, kind, hdr); err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("client %s unreachable: %w", o.user, err)
	}
	return st, nil
}

// release frees what removed intercepts held.
func (a *Agent) release(ics []*intercept) {
	for _, ic := range ics {
		if ic.mirror != nil {
			ic.mirror.close()
		}
		if ic.http != nil {
			ic.http.close()
		}
	}
}

func (a *Agent) closeHTTPPorts() {
	a.httpMu.Lock()
	defer a.httpMu.Unlock()
	a.httpClosed = true
	for _, hp := range a.httpPorts {
		hp.close()
	}
}

// connListener hands sniffed connections to an http.Server.
type connListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnListener() *connListener {
	return &connListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *connListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// tlsListener terminates TLS on the connections of a connListener.
type tlsListener struct {
	*connListener
	cfg *tls.Config
}

func (l tlsListener) Accept() (net.Conn, error) {
	c, err := l.connListener.Accept()
	if err != nil {
		return nil, err
	}
	return tls.Server(c, l.cfg), nil
}

// sniffConn tells the h2c preface from an HTTP/1 request that starts with
// 'P' (POST, PUT, PATCH) and returns what it read to tell them apart
// (whole reads: the first bytes of the connection, replayed by whichever
// serves it). It reads through a pooled reader of the HTTP/1.1 loop: a
// fresh h2c-sized one for every such connection cost 32 KiB each. A
// caller that sends the first byte and stops is given up after within,
// as a request head is (headerTimeout).
func sniffConn(c net.Conn, within time.Duration) (h2c bool, read []byte, err error) {
	_ = c.SetReadDeadline(time.Now().Add(within))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	br := h1Readers.Get().(*bufio.Reader)
	br.Reset(c)
	defer func() {
		br.Reset(nil)
		h1Readers.Put(br)
	}()
	if h2c, err = sniffH2C(br); err != nil {
		return false, nil, err
	}
	buf, _ := br.Peek(br.Buffered())
	return h2c, append([]byte(nil), buf...), nil
}

// servedConn is an inbound connection whose first byte was read to sniff
// it; closed tells the accepting goroutine the server is done with it.
type servedConn struct {
	net.Conn
	prefix []byte
	closed chan struct{}
	once   sync.Once
}

func (c *servedConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *servedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}

func (c *servedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// previewCookieAge keeps a browser routed across restarts for a working
// day; once the intercept is gone the cookie matches nothing and is harmless.
const previewCookieAge = 12 * 60 * 60

// bodyGuard closes the request body before ServeHTTP returns, and keeps
// it from being read after. net/http's HTTP/1 server, with full duplex
// on, panics ("invalid concurrent Body.Read call", golang/go#68560) and
// drops the connection when the body reaches its end only in the
// server's own clean-up after the handler: that starts its background
// read after it stopped the last one, and then reads the next request
// alongside. That happens when the backend answers without reading the
// whole upload, and when a RoundTripper (the HTTP/2 transport to an h2c
// app) reads or closes the body in a goroutine of its own after RoundTrip
// returned, which net/http's RoundTripper contract allows. stop waits for
// a read in flight (one that does not end within bodyGuardWait, from a
// client that stopped sending, is woken by a read deadline, which costs
// that connection, as an unread body would anyway), then closes the body
// inside the handler, where the server's clean-up expects it.
type bodyGuard struct {
	io.ReadCloser
	mu      sync.Mutex
	stopped bool
}

const bodyGuardWait = time.Second

func (g *bodyGuard) Read(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return 0, http.ErrBodyReadAfterClose
	}
	return g.ReadCloser.Read(p)
}

// Close is the RoundTripper's: stop closes the server's body.
func (g *bodyGuard) Close() error { return nil }

func (g *bodyGuard) stop(w http.ResponseWriter) {
	if g.mu.TryLock() { // no read in flight: the common case
		g.stopped = true
		g.mu.Unlock()
	} else {
		g.awake(w, func() {
			g.mu.Lock()
			g.stopped = true
			g.mu.Unlock()
		})
	}
	_ = g.ReadCloser.Close()
}

// awake runs f, which may wait for the body, after the answer was flushed
// (the client may be waiting for its end), and wakes a read f waits for
// that has not ended within bodyGuardWait with a read deadline.
func (g *bodyGuard) awake(w http.ResponseWriter, f func()) {
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	wake := time.AfterFunc(bodyGuardWait, func() { _ = rc.SetReadDeadline(time.Now()) })
	f()
	wake.Stop()
}
