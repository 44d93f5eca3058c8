package proxynet

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/detour-dev/detour/tunnel"
)

// serveHTTP serves the HTTP proxy on ln; stop closes it and every
// connection it holds.
func (s *server) serveHTTP(ln net.Listener) (stop func()) {
	errLog := zap.NewStdLog(s.cfg.Log.WithOptions(zap.IncreaseLevel(zap.DebugLevel)))
	tr := &http.Transport{
		Proxy:                 nil, // never the workstation's own proxy variables
		DialContext:           s.dialHTTP,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   s.cfg.HandshakeTimeout,
		ExpectContinueTimeout: time.Second,
	}
	forward := &httputil.ReverseProxy{
		// The request's absolute URI and Host go upstream as they came;
		// the proxy headers (Proxy-Authorization, Proxy-Connection) are
		// hop-by-hop and dropped, and no X-Forwarded-* is added.
		Rewrite:       func(*httputil.ProxyRequest) {},
		Transport:     tr,
		FlushInterval: -1,
		ErrorHandler:  func(w http.ResponseWriter, r *http.Request, err error) { connectError(w, r.URL.Host, err) },
		ErrorLog:      errLog,
	}
	srv := &http.Server{
		Handler:           s.httpHandler(forward),
		ReadHeaderTimeout: s.cfg.HandshakeTimeout,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return s.ctx },
		ErrorLog:          errLog,
	}
	s.tr.enter()
	go func() {
		defer s.tr.leave()
		_ = srv.Serve(ln)
	}()
	return func() {
		_ = srv.Close()
		tr.CloseIdleConnections()
	}
}

func (s *server) httpHandler(forward http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.tr.enter() {
			http.Error(w, "detour proxy: stopping", http.StatusServiceUnavailable)
			return
		}
		defer s.tr.leave()
		if !s.authorized(r) {
			w.Header().Set("Proxy-Authenticate", `Basic realm="detour"`)
			http.Error(w, "detour proxy: Proxy-Authorization required (the credentials are in HTTP_PROXY)", http.StatusProxyAuthRequired)
			return
		}
		switch {
		case r.Method == http.MethodConnect:
			s.serveConnect(w, r)
		case r.URL.IsAbs() && r.URL.Host != "" && (r.URL.Scheme == "http" || r.URL.Scheme == "https"):
			forward.ServeHTTP(w, r)
		default:
			http.Error(w, "detour proxy: this is an HTTP proxy: send CONNECT host:port, or a request with an absolute URI (GET http://host/path)", http.StatusBadRequest)
		}
	})
}

func (s *server) authorized(r *http.Request) bool {
	if s.cfg.Password == "" {
		return true
	}
	scheme, enc, ok := strings.Cut(r.Header.Get("Proxy-Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return false
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
	if err != nil {
		return false
	}
	user, pass, _ := strings.Cut(string(b), ":")
	return credentials{s.cfg.Password}.Valid(user, pass, "")
}

// serveConnect dials CONNECT's destination, then relays the hijacked
// connection.
func (s *server) serveConnect(w http.ResponseWriter, r *http.Request) {
	host, port, err := splitTarget(r.Host)
	if err != nil {
		http.Error(w, fmt.Sprintf("detour proxy: CONNECT %q: %v", r.Host, err), http.StatusBadRequest)
		return
	}
	target, err := s.connect(r.Context(), host, port)
	if err != nil {
		connectError(w, r.Host, err)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		_ = target.Close()
		http.Error(w, "detour proxy: cannot take the connection over: "+err.Error(), http.StatusInternalServerError)
		return
	}
	_ = conn.SetDeadline(time.Time{})
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		_ = conn.Close()
		_ = target.Close()
		return
	}
	client := conn
	if brw.Reader.Buffered() > 0 { // the client did not wait for our answer
		client = &readerConn{Conn: conn, r: brw.Reader}
	}
	tunnel.Join(client, target)
}

// dialHTTP is the forwarding Transport's dial: our resolver and routing.
func (s *server) dialHTTP(ctx context.Context, _, addr string) (net.Conn, error) {
	host, port, err := splitTarget(addr)
	if err != nil {
		return nil, err
	}
	return s.connect(ctx, host, port)
}

// splitTarget parses host:port, with a port 1..65535.
func splitTarget(hostport string) (string, uint16, error) {
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, fmt.Errorf("not host:port: %w", err)
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 || host == "" {
		return "", 0, errors.New("not host:port with a port 1..65535")
	}
	return host, uint16(port), nil
}

// connectError answers a failed connect: 502 (or 403, 504) with a one-line
// reason.
func connectError(w http.ResponseWriter, target string, err error) {
	f := classify(err)
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	http.Error(w, fmt.Sprintf("detour proxy: %s: %s: %s", target, f.what, msg), f.status)
}
