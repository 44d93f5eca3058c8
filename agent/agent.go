package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/detour-dev/detour/internal/addrset"
	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/tunnel"
)

// Agent is the traffic agent. Create it with New and start it with Run.
type Agent struct {
	cfg      Config
	log      *zap.Logger
	reg      *registry
	m        *metrics
	gatherer prometheus.Gatherer

	conns    tracker // inbound connections and pod dials
	sessions tracker // tunnel sessions

	tls     *tlsFiles
	clients clientSet

	resolv tunnel.ResolvConf // the pod's resolv.conf
	// clusterDomain (from resolv's search path) bounds what DNS answers
	// may teach the egress rules (dns.go, learn).
	clusterDomain string
	dnsPort       int          // the nameservers' port (53; tests change it)
	egress        Egress       // with the nameservers of resolv
	learned       *addrset.Set // addresses the cluster DNS returned
	// clientStreams bounds the client streams of all sessions together
	// (dial.go, acceptClientStreams).
	clientStreams chan struct{}

	httpMu     sync.Mutex
	httpPorts  map[uint16]*httpPort // ports that have had http intercepts
	httpClosed bool
	h2Lend     *h2LendPool // the h2c relays' connection windows (h2relay.go)

	idle    idleClock // when the agent last had a session (idle.go)
	started time.Time // when it became ready (replace.go)

	probes *probes // tokens clients armed app ports with (probe.go)

	nextOwner atomic.Uint64
	ready     atomic.Bool
	readyCh   chan struct{}
	addrs     Addrs
}

// Addrs are the addresses the agent bound, known once Ready is closed.
type Addrs struct {
	Tunnel    net.Addr
	Redirect  net.Addr
	Listeners map[uint16]net.Addr // by app port
	Health    net.Addr
	Metrics   net.Addr
}

// New checks cfg and prepares an agent.
func New(cfg Config, log *zap.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	resolv, err := readResolvConf(cfg.ResolvConf)
	if err != nil {
		return nil, err
	}
	egress := cfg.Egress
	egress.Nameservers = append(nameserverAddrs(resolv), egress.Nameservers...)
	lend := newH2LendPool(h2AgentLend)
	return &Agent{
		resolv:        resolv,
		clusterDomain: addrset.ClusterDomain(resolv.Search),
		dnsPort:       53,
		egress:        egress,
		learned:       addrset.New(time.Now),
		clientStreams: make(chan struct{}, agentStreamsPerSession*maxClientStreams(cfg)),
		cfg:           cfg,
		log:           log,
		reg:           newRegistry(cfg.appPorts()),
		m:             newMetrics(promReg, lend),
		gatherer:      promReg,
		readyCh:       make(chan struct{}),
		tls:           &tlsFiles{terminatingDir: cfg.TerminatingTLSDir, originatingDir: cfg.OriginatingTLSDir},

		httpPorts: map[uint16]*httpPort{},
		h2Lend:    lend,
		probes:    newProbes(time.Now),
	}, nil
}

// Ready is closed once every listener is bound.
func (a *Agent) Ready() <-chan struct{} { return a.readyCh }

// Addrs returns the bound addresses; call it after Ready is closed.
func (a *Agent) Addrs() Addrs { return a.addrs }

type inboundListener struct {
	ln       net.Listener
	appPort  uint16 // 0 for the redirect listener: the port comes from SO_ORIGINAL_DST
	redirect bool
}

// bound is every listener the agent serves on.
type bound struct {
	tunnel  net.Listener
	inbound []inboundListener // the redirect listener and the app ports'
	health  net.Listener
	metrics net.Listener
}

// closeInbound closes the app's listeners: that is what ends their accept
// loops.
func (b *bound) closeInbound() {
	for _, l := range b.inbound {
		_ = l.ln.Close()
	}
}

// Run binds the listeners, serves until ctx is cancelled, then shuts down:
// listeners close at once, in-flight connections get ShutdownGrace to
// finish, then everything still open is closed.
func (a *Agent) Run(ctx context.Context) error {
	ls, err := a.bind()
	if err != nil {
		return err
	}
	health := a.httpServer(a.healthHandler())
	metricsSrv := a.httpServer(promhttp.HandlerFor(a.gatherer, promhttp.HandlerOpts{}))

	serveCtx, stopServing := context.WithCancel(ctx)
	defer stopServing()
	g, gctx := errgroup.WithContext(serveCtx)
	// At shutdown the tunnel closes at once; the app's listeners stay open
	// through the grace period (shutdown), so traffic that still arrives
	// before the endpoints are updated reaches the app instead of a refused
	// port.
	stopTunnel := context.AfterFunc(gctx, func() {
		a.ready.Store(false)
		_ = ls.tunnel.Close()
	})
	defer stopTunnel()
	defer ls.closeInbound()
	for _, l := range ls.inbound {
		g.Go(func() error { return a.acceptInbound(l) })
	}
	g.Go(func() error { return a.acceptTunnel(ls.tunnel) })
	g.Go(func() error { return serveHTTP(health, ls.health, "health") })
	g.Go(func() error { return serveHTTP(metricsSrv, ls.metrics, "metrics") })

	a.started = time.Now()
	a.idle.touch(a.started)
	a.ready.Store(true)
	close(a.readyCh)
	a.log.Info("agent ready",
		zap.Stringer("tunnel", a.addrs.Tunnel),
		zap.Uint16s("appPorts", a.cfg.appPorts()),
		zap.Bool("redirect", a.cfg.RedirectAddr != ""))

	<-gctx.Done()
	a.shutdown(ls, health, metricsSrv)
	stopServing()
	err = g.Wait()
	a.conns.wait()
	a.sessions.wait()
	if err != nil {
		return err
	}
	a.log.Info("agent stopped")
	return nil
}

// bind opens every listener the configuration names and records their
// addresses; on an error none stays open.
func (a *Agent) bind() (*bound, error) {
	var opened []net.Listener
	listen := func(addr, what string) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, ln := range opened {
				_ = ln.Close()
			}
			return nil, fmt.Errorf("listen for %s on %s: %w", what, addr, err)
		}
		opened = append(opened, ln)
		return ln, nil
	}
	var b bound
	var err error
	if b.tunnel, err = listen(a.cfg.TunnelAddr, "tunnel clients"); err != nil {
		return nil, err
	}
	a.addrs.Tunnel = b.tunnel.Addr()
	if a.cfg.RedirectAddr != "" {
		ln, err := listen(a.cfg.RedirectAddr, "redirected traffic")
		if err != nil {
			return nil, err
		}
		a.addrs.Redirect = ln.Addr()
		b.inbound = append(b.inbound, inboundListener{ln: ln, redirect: true})
	}
	a.addrs.Listeners = map[uint16]net.Addr{}
	for _, m := range a.cfg.Listeners {
		ln, err := listen(fmt.Sprintf(":%d", m.Listen), fmt.Sprintf("app port %d", m.App))
		if err != nil {
			return nil, err
		}
		a.addrs.Listeners[m.App] = ln.Addr()
		b.inbound = append(b.inbound, inboundListener{ln: ln, appPort: m.App})
	}
	if b.health, err = listen(a.cfg.HealthAddr, "health checks"); err != nil {
		return nil, err
	}
	a.addrs.Health = b.health.Addr()
	if b.metrics, err = listen(a.cfg.MetricsAddr, "metrics"); err != nil {
		return nil, err
	}
	a.addrs.Metrics = b.metrics.Addr()
	return &b, nil
}

// shutdown drains the app's traffic for up to ShutdownGrace, gives the
// intercepts back, then closes everything still open. The tunnel listener
// is closed already.
func (a *Agent) shutdown(ls *bound, servers ...*http.Server) {
	a.log.Info("agent shutting down", zap.Duration("grace", a.cfg.ShutdownGrace),
		zap.Int("openConnections", a.conns.len()))
	a.ready.Store(false)
	// Intercepts hold through the drain: while the pod is terminating,
	// kube-proxy may still send it new connections for a moment, and those
	// belong to the clients whose sessions are still up (a client that is
	// gone fails open to the app as always). No new session can start: the
	// tunnel listener is closed.
	if !a.drain(a.cfg.ShutdownGrace) {
		a.log.Warn("grace period over: closing connections still open", zap.Int("connections", a.conns.len()))
	}
	if given := a.reg.clear(); len(given) > 0 {
		a.release(given)
		a.updateInterceptGauge()
		a.log.Info("intercepts given back at shutdown", zap.Strings("intercepts", names(given)))
	}
	ls.closeInbound()
	a.conns.closeAll()
	a.closeHTTPPorts()
	a.sessions.closeAll()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, srv := range servers {
		_ = srv.Shutdown(shutdownCtx)
	}
}

func (a *Agent) httpServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: zap.NewStdLog(a.log.Named("http"))}
}

func serveHTTP(srv *http.Server, ln net.Listener, what string) error {
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", what, err)
	}
	return nil
}

func (a *Agent) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc(annotations.IdlePath, a.serveIdle)
	mux.HandleFunc(annotations.ReplacePath, a.serveReplace)
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "not ready: starting or shutting down", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// acceptLoop runs handle for every accepted connection until ln is closed.
// Temporary errors (EMFILE under load) back off instead of ending the loop.
func acceptLoop(ln net.Listener, log *zap.Logger, handle func(net.Conn)) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("backoff", backoff))
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		backoff = 0
		handle(c)
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// tracker owns a set of connections (or sessions): it lets shutdown wait
// for them and close the ones that outlive the grace period.
type tracker struct {
	mu     sync.Mutex
	open   map[interface{ Close() error }]struct{}
	closed bool
	wg     sync.WaitGroup
}

// add registers c; false means shutdown has already closed the set.
func (t *tracker) add(c interface{ Close() error }) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	if t.open == nil {
		t.open = map[interface{ Close() error }]struct{}{}
	}
	t.open[c] = struct{}{}
	t.wg.Add(1)
	return true
}

func (t *tracker) done(c interface{ Close() error }) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.open[c]; ok {
		delete(t.open, c)
		t.wg.Done()
	}
}

func (t *tracker) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.open)
}

func (t *tracker) closeAll() {
	t.mu.Lock()
	t.closed = true
	open := make([]interface{ Close() error }, 0, len(t.open))
	for c := range t.open {
		open = append(open, c)
	}
	t.mu.Unlock()
	for _, c := range open {
		_ = c.Close()
	}
}

// wait waits for every tracked item; call it only after closeAll, when add
// no longer succeeds (a WaitGroup must not grow while it is waited on).
func (t *tracker) wait() { t.wg.Wait() }

// drainQuiet is how long the app's listeners must have had no open
// connection before shutdown closes them early.
const drainQuiet = 500 * time.Millisecond

// drain keeps passing traffic to the app until no connection has been open
// for drainQuiet, or grace runs out (false).
func (a *Agent) drain(grace time.Duration) bool {
	deadline := time.Now().Add(grace)
	quietSince := time.Now()
	for {
		now := time.Now()
		if a.conns.len() > 0 {
			quietSince = now
		} else if now.Sub(quietSince) >= min(drainQuiet, grace) {
			return true
		}
		if now.After(deadline) {
			return a.conns.len() == 0
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func containsPort(ports []uint16, p uint16) bool { return slices.Contains(ports, p) }
