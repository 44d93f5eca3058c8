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
	"net/http/httputil"
	"strings"
	"sync"
	"time"

	"github.com/detour-dev/detour/tunnel"
	"go.uber.org/zap"
	"golang.org/x/net/http2"
)

// httpProtocol is what one side of an http route speaks.
type httpProtocol struct {
	tls bool // TLS; HTTP/2 or HTTP/1.1 is then chosen by ALPN
	h2  bool // HTTP/2 with prior knowledge (h2c), or h2 negotiated over TLS
}

func (p httpProtocol) String() string {
	switch {
	case p.tls && p.h2:
		return "https+h2"
	case p.tls:
		return "https"
	case p.h2:
		return "h2c"
	}
	return "http/1.1"
}

// probeTimeout bounds one protocol probe, dial included.
const probeTimeout = 2 * time.Second

// probePath is what the probe asks for; an app may log it.
const probePath = "/detour-http2-check"

// knownProtocol maps a Service port's appProtocol (and the strategy, for a
// port without one) to a protocol when no probe is needed; probe says one is.
func knownProtocol(appProtocol, strategy string, useTLS bool) (p httpProtocol, probe bool) {
	p.tls = useTLS
	switch strings.ToLower(appProtocol) {
	case "http", "kubernetes.io/ws":
		return p, false
	case "http2", "h2c", "kubernetes.io/h2c", "grpc":
		p.h2 = true
		return p, false
	case "https", "kubernetes.io/wss":
		p.tls = true
		return p, useTLS // over TLS, ALPN decides h2; the probe only checks TLS answers
	}
	if useTLS {
		return p, true
	}
	switch strategy {
	case tunnel.StrategyHTTP:
		return p, false
	case tunnel.StrategyHTTP2:
		p.h2 = true
		return p, false
	}
	return p, true
}

// dialFunc opens one connection to a backend (the app, or the local process
// through the tunnel).
type dialFunc func(ctx context.Context) (net.Conn, error)

// probeProtocol finds what the peer behind dial speaks: over TLS, whether
// the handshake succeeds and which protocol ALPN picks; in plain text, a
// GET with HTTP/2 prior knowledge, then HTTP/1.1. An error means it speaks
// no HTTP this agent can route.
func probeProtocol(ctx context.Context, dial dialFunc, tlsCfg *tls.Config) (httpProtocol, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if tlsCfg != nil {
		c, err := dial(ctx)
		if err != nil {
			return httpProtocol{}, err
		}
		defer c.Close()
		cfg := tlsCfg.Clone()
		cfg.NextProtos = []string{http2.NextProtoTLS, "http/1.1"}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return httpProtocol{}, fmt.Errorf("TLS handshake: %w", err)
		}
		return httpProtocol{tls: true, h2: tc.ConnectionState().NegotiatedProtocol == http2.NextProtoTLS}, nil
	}

	var first bytes.Buffer
	h2 := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, _, _ string, _ *tls.Config) (net.Conn, error) {
		c, err := dial(ctx)
		if err != nil {
			return nil, err
		}
		return &recordingConn{Conn: c, rec: &first}, nil
	}}
	defer h2.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://probe"+probePath, nil)
	resp, h2Err := h2.RoundTrip(req)
	if h2Err == nil {
		resp.Body.Close()
		return httpProtocol{h2: true}, nil
	}
	if bytes.HasPrefix(first.Bytes(), []byte("HTTP/1.")) {
		return httpProtocol{}, nil
	}
	// Some HTTP/1 servers close on the HTTP/2 preface without a word: ask
	// once more in HTTP/1.1.
	c, err := dial(ctx)
	if err != nil {
		return httpProtocol{}, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := io.WriteString(c, "GET "+probePath+" HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"); err != nil {
		return httpProtocol{}, err
	}
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
		resp.Body.Close()
		return httpProtocol{}, nil
	}
	return httpProtocol{}, fmt.Errorf("no HTTP/2 (%v) nor HTTP/1.1 answer to GET %s within %s", h2Err, probePath, probeTimeout)
}

// recordingConn keeps the first bytes read, so a failed HTTP/2 probe can
// tell an HTTP/1 server's answer from a peer that speaks something else.
type recordingConn struct {
	net.Conn
	rec *bytes.Buffer
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if room := 16 - c.rec.Len(); room > 0 && n > 0 {
		c.rec.Write(p[:min(n, room)])
	}
	return n, err
}

// proxyBuffers recycles ReverseProxy's copy buffers: one 32 KiB buffer per
// response was most of the router's garbage.
var proxyBuffers = &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

type bufferPool struct{ pool sync.Pool }

func (p *bufferPool) Get() []byte  { return *p.pool.Get().(*[]byte) }
func (p *bufferPool) Put(b []byte) { p.pool.Put(&b) }

// backend proxies requests to one peer: the app, or one intercept's local
// process. Requests that upgrade (WebSocket) always go over HTTP/1.1.
type backend struct {
	proto   httpProtocol
	main    http.RoundTripper
	upgrade http.RoundTripper
	proxy   *httputil.ReverseProxy
	pool    *h1Pool  // plain HTTP/1.1 only: the connection loop's (httpconn.go)
	dial    dialFunc // one connection to the peer: the h2c relay's (h2relay.go)

	// The h2c relays' connections to this peer: close ends those that
	// are idle, and the others once their streams are done.
	relayMu  sync.Mutex
	relayUps map[*h2Up]*h2Relay
	closed   bool
}

// addRelayUp registers u of rl; false once b is closed.
func (b *backend) addRelayUp(u *h2Up, rl *h2Relay) bool {
	b.relayMu.Lock()
	defer b.relayMu.Unlock()
	if b.closed {
		return false
	}
	if b.relayUps == nil {
		b.relayUps = map[*h2Up]*h2Relay{}
	}
	b.relayUps[u] = rl
	return true
}

func (b *backend) removeRelayUp(u *h2Up) {
	b.relayMu.Lock()
	defer b.relayMu.Unlock()
	delete(b.relayUps, u)
}

// forwardedHeaders are kept as they arrived: the agent is transparent, not
// one more proxy hop in the chain the app sees.
var forwardedHeaders = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

func newBackend(proto httpProtocol, dial dialFunc, tlsCfg *tls.Config, log *zap.Logger, onError func(http.ResponseWriter, *http.Request, error)) *backend {
	dialContext := func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) }
	b := &backend{proto: proto, dial: dial}
	scheme := "http"
	switch {
	case proto.tls:
		scheme = "https"
		cfg := tlsCfg.Clone()
		cfg.NextProtos = []string{http2.NextProtoTLS, "http/1.1"}
		b.main = &http.Transport{DialContext: dialContext, TLSClientConfig: cfg, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 256, DisableCompression: true}
		up := tlsCfg.Clone()
		up.NextProtos = []string{"http/1.1"}
		b.upgrade = &http.Transport{DialContext: dialContext, TLSClientConfig: up, MaxIdleConnsPerHost: 16, DisableCompression: true}
	case proto.h2:
		b.main = &http2.Transport{AllowHTTP: true, DisableCompression: true, DialTLSContext: func(ctx context.Context, _, _ string, _ *tls.Config) (net.Conn, error) {
			return dial(ctx)
		}}
		b.upgrade = &http.Transport{DialContext: dialContext, MaxIdleConnsPerHost: 16, DisableCompression: true}
	default:
		t := &http.Transport{DialContext: dialContext, MaxIdleConnsPerHost: 256, DisableCompression: true}
		b.main, b.upgrade = t, t
		b.pool = &h1Pool{dial: dial}
	}
	b.proxy = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme = scheme
			r.Out.URL.Host = r.In.Host
			if r.Out.URL.Host == "" {
				r.Out.URL.Host = "app"
			}
			for _, h := range forwardedHeaders {
				if v, ok := r.In.Header[h]; ok {
					r.Out.Header[h] = v
				}
			}
		},
		Transport: b,
		// FlushInterval 0: ReverseProxy already flushes every write of a
		// response without a length (gRPC, chunked streams) and of
		// text/event-stream; flushing all others too cost ~20% of the CPU.
		BufferPool:     proxyBuffers,
		ModifyResponse: keepTrailers,
		ErrorLog:       zap.NewStdLog(log.Named("proxy")),
		ErrorHandler:   onError,
	}
	return b
}

// keepTrailers drops the length of a response that has trailers: an
// HTTP/2 backend may send both, and a length would keep an HTTP/1.1 caller's
// response from being chunked, the only way it can carry trailers.
func keepTrailers(res *http.Response) error {
	if len(res.Trailer) > 0 {
		res.Header.Del("Content-Length")
		res.ContentLength = -1
	}
	return nil
}

// RoundTrip sends upgrades over HTTP/1.1: HTTP/2 has no Upgrade.
func (b *backend) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Upgrade") != "" {
		return b.upgrade.RoundTrip(r)
	}
	return b.main.RoundTrip(r)
}

func (b *backend) close() {
	if b.pool != nil {
		b.pool.close()
	}
	b.relayMu.Lock()
	b.closed = true
	ups := b.relayUps
	b.relayUps = nil
	b.relayMu.Unlock()
	for u, rl := range ups {
		// Not waited for: a relay writing to a caller that does not read
		// holds its lock until the caller reads or goes away.
		go rl.closeUp(u)
	}
	type idleCloser interface{ CloseIdleConnections() }
	for _, t := range []http.RoundTripper{b.main, b.upgrade} {
		if c, ok := t.(idleCloser); ok {
			c.CloseIdleConnections()
		}
	}
}

// httpIntercept is an http intercept's routing state.
type httpIntercept struct {
	settings    tunnel.HTTPSettings
	appProtocol httpProtocol // what the app side speaks, for status

	// local is the backend to the owner's local process, found on first
	// use: the process may start after the intercept.
	mu       sync.Mutex
	local    *backend
	newLocal func(ctx context.Context) (*backend, error)
}

func (h *httpIntercept) localBackend(ctx context.Context) (*backend, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.local != nil {
		return h.local, nil
	}
	b, err := h.newLocal(ctx)
	if err != nil {
		return nil, err
	}
	h.local = b
	return b, nil
}

func (h *httpIntercept) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.local != nil {
		h.local.close()
	}
}

// errLocalNotHTTP is why a request for an intercept got a 502.
var errLocalNotHTTP = errors.New("the local process does not answer HTTP")
