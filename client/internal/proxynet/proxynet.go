package proxynet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Dialer opens TCP connections with the routing of the cluster network
// (*clusternet.Net).
type Dialer interface {
	DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error)
}

// Resolver looks a host name up; an error wrapping ErrNotFound means the
// name has no address.
type Resolver interface {
	LookupHost(ctx context.Context, name string) ([]netip.Addr, error)
}

// ErrNotFound: the name resolves to nothing.
var ErrNotFound = errors.New("no such host")

// User is the user name the proxies expect with Config.Password.
const User = "detour"

// Config configures the proxies.
type Config struct {
	Dialer   Dialer
	Resolver Resolver
	// Password, when set, is required of every client (SOCKS5
	// username/password, HTTP Proxy-Authorization Basic, user User). The
	// proxies listen on 127.0.0.1, where any local user's processes could
	// otherwise use the pod's network reach; Env puts it in the URLs.
	Password string
	// HandshakeTimeout bounds a client's SOCKS5 greeting and request and an
	// HTTP request's header (default 10 s).
	HandshakeTimeout time.Duration
	// ConnectTimeout bounds resolving and dialling one destination
	// (default 30 s).
	ConnectTimeout time.Duration
	Log            *zap.Logger
}

// Proxies are the running proxies.
type Proxies struct {
	SOCKS    netip.AddrPort // SOCKS5
	HTTP     netip.AddrPort // HTTP CONNECT and absolute-URI forwarding
	password string
	done     chan struct{}
}

// Done is closed once the proxies stopped (their context ended) and
// every connection they held is closed.
func (p *Proxies) Done() <-chan struct{} { return p.done }

// Env is the environment that sends a program honouring the usual proxy
// variables through the proxies (socks5h: names resolve at the proxy).
func (p *Proxies) Env() map[string]string {
	var user *url.Userinfo
	if p.password != "" {
		user = url.UserPassword(User, p.password)
	}
	socks := (&url.URL{Scheme: "socks5h", User: user, Host: p.SOCKS.String()}).String()
	http := (&url.URL{Scheme: "http", User: user, Host: p.HTTP.String()}).String()
	env := map[string]string{}
	for _, k := range []string{"ALL_PROXY", "all_proxy"} {
		env[k] = socks
	}
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"} {
		env[k] = http
	}
	for _, k := range []string{"NO_PROXY", "no_proxy"} {
		env[k] = "localhost,127.0.0.1,::1"
	}
	return env
}

// Serve starts both proxies on 127.0.0.1 (ephemeral ports); they stop
// when ctx ends.
func Serve(ctx context.Context, cfg Config) (*Proxies, error) {
	if cfg.Dialer == nil || cfg.Resolver == nil {
		return nil, errors.New("proxynet: a Dialer and a Resolver are needed")
	}
	cfg = withDefaults(cfg)
	socksLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the SOCKS5 proxy on 127.0.0.1: %w", err)
	}
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = socksLn.Close()
		return nil, fmt.Errorf("listen for the HTTP proxy on 127.0.0.1: %w", err)
	}
	px := &Proxies{
		SOCKS: socksLn.Addr().(*net.TCPAddr).AddrPort(), HTTP: httpLn.Addr().(*net.TCPAddr).AddrPort(),
		password: cfg.Password, done: make(chan struct{}),
	}
	s := &server{cfg: cfg, ctx: ctx, own: []netip.AddrPort{px.SOCKS, px.HTTP}, tr: newTracker()}
	stopHTTP := s.serveHTTP(&trackedListener{Listener: httpLn, tr: s.tr})
	s.tr.enter()
	go func() {
		defer s.tr.leave()
		s.serveSOCKS(&trackedListener{Listener: socksLn, tr: s.tr})
	}()
	go func() {
		<-ctx.Done()
		_ = socksLn.Close()
		stopHTTP()
		s.tr.stop()
		close(px.done)
	}()
	return px, nil
}

func withDefaults(cfg Config) Config {
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	return cfg
}

// server is what both proxies share: resolving and dialling.
type server struct {
	cfg Config
	ctx context.Context
	own []netip.AddrPort // the proxies' own addresses: never a destination
	tr  *tracker
}

// connect resolves host (a name or an address) and dials port on its
// addresses in turn, within the connect timeout.
func (s *server) connect(ctx context.Context, host string, port uint16) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	addrs, err := s.lookup(ctx, host)
	if err != nil {
		return nil, err
	}
	return s.dialAny(ctx, addrs, port)
}

func (s *server) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	addrs, err := s.cfg.Resolver.LookupHost(ctx, host)
	if err == nil && len(addrs) == 0 {
		err = fmt.Errorf("%s: %w", host, ErrNotFound)
	}
	return addrs, err
}

// dialAny dials each address in turn and returns the first connection.
func (s *server) dialAny(ctx context.Context, addrs []netip.Addr, port uint16) (net.Conn, error) {
	var errs []error
	for _, a := range addrs {
		dst := netip.AddrPortFrom(a.Unmap(), port)
		if s.isOwn(dst) {
			errs = append(errs, fmt.Errorf("%s is this proxy itself: %w", dst, errLoop))
			continue
		}
		c, err := s.cfg.Dialer.DialTCP(ctx, dst)
		if err == nil {
			return c, nil
		}
		s.cfg.Log.Debug("proxy dial failed", zap.Stringer("destination", dst), zap.Error(err))
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

var errLoop = errors.New("proxy loop")

func (s *server) isOwn(dst netip.AddrPort) bool {
	if !dst.Addr().IsLoopback() && !dst.Addr().IsUnspecified() {
		return false
	}
	for _, o := range s.own {
		if o.Port() == dst.Port() {
			return true
		}
	}
	return false
}

// tracker holds the proxies' connections and goroutines, so that stopping
// closes every connection and waits for every handler.
type tracker struct {
	mu      sync.Mutex
	stopped bool
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
}

func newTracker() *tracker { return &tracker{conns: map[net.Conn]struct{}{}} }

// enter registers a handler; false once stopped.
func (t *tracker) enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	t.wg.Add(1)
	return true
}

func (t *tracker) leave() { t.wg.Done() }

func (t *tracker) add(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *tracker) remove(c net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, c)
}

func (t *tracker) stop() {
	t.mu.Lock()
	t.stopped = true
	conns := make([]net.Conn, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	t.wg.Wait()
}

// trackedListener registers each accepted connection with the tracker.
type trackedListener struct {
	net.Listener
	tr *tracker
}

func (l *trackedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc := &trackedConn{Conn: c, tr: l.tr}
		if l.tr.add(tc) {
			return tc, nil
		}
		_ = c.Close()
	}
}

type trackedConn struct {
	net.Conn
	tr   *tracker
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.tr.remove(c) })
	return err
}

// CloseWrite half-closes a TCP connection (tunnel.Join uses it).
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
