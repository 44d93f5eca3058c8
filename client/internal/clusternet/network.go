package clusternet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/detour-dev/detour/internal/addrset"
	"github.com/detour-dev/detour/tunnel"
)

// Link reaches the agent: dial streams and DNS streams (a *client.Session,
// or one that reconnects).
type Link interface {
	Dial(ctx context.Context, network string, dst netip.AddrPort) (net.Conn, error)
	DNS(ctx context.Context) (net.Conn, error)
}

// Config configures a Net.
type Config struct {
	Link Link
	// Pod is the pod's network, as its agent reported it.
	Pod tunnel.Network
	// AlsoProxy are further ranges sent to the cluster (--also-proxy).
	AlsoProxy []netip.Prefix
	// Resolver is the address the namespace's resolv.conf names.
	Resolver netip.Addr
	// Workstation answers names the cluster does not own (nil: none).
	Workstation Exchanger
	Log         *zap.Logger
	// Warn tells the user, once per destination, why a dial was refused.
	Warn func(string)
}

// Net routes a local process's connections (netstack.Handler).
type Net struct {
	cfg      Config
	routes   Routes
	resolver *Resolver
	learned  *addrset.Set

	warnMu sync.Mutex
	warned map[string]bool

	resolverFlows   chan struct{} // bounds the resolver's UDP flows
	resolverDropped atomic.Int64
	resolverIdle    time.Duration
}

// New prepares the routing and the resolver for one process.
func New(cfg Config) (*Net, error) {
	n := &Net{cfg: cfg, learned: addrset.New(time.Now), warned: map[string]bool{},
		resolverFlows: make(chan struct{}, maxResolverFlows), resolverIdle: resolverIdle}
	// Link-local addresses (the node's and the cloud's metadata services)
	// go to the agent, which refuses them with a message naming the rule:
	// the pod's view has no metadata service, and the workstation's own
	// is never what a program "inside the pod" meant to reach.
	cluster := append([]netip.Prefix{netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("fe80::/10"), netip.MustParsePrefix("fd00:ec2::254/128")}, cfg.AlsoProxy...)
	for _, c := range cfg.Pod.ClusterCIDRs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("the agent reported cluster range %q: %w", c, err)
		}
		cluster = append(cluster, p)
	}
	for _, s := range cfg.Pod.DNS.Nameservers {
		if a, err := netip.ParseAddr(s); err == nil {
			cluster = append(cluster, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		}
	}
	n.routes = Routes{Resolver: cfg.Resolver, Cluster: cluster, Learned: n.learned.Has}
	n.resolver = &Resolver{
		Cluster:       streamExchanger{open: cfg.Link.DNS},
		Workstation:   cfg.Workstation,
		ClusterDomain: addrset.ClusterDomain(cfg.Pod.DNS.Search),
		IsCluster:     func(a netip.Addr) bool { return n.routes.Decide(a) == RouteCluster },
		Learn:         n.learned.Add,
		Log:           cfg.Log,
	}
	return n, nil
}

// ResolvConf is the namespace's /etc/resolv.conf: the resolver, with the
// pod's search path and ndots, so names expand exactly as in the pod.
func (n *Net) ResolvConf() []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# written by detour: the pod's search path; names resolve as inside the pod\nnameserver %s\n", n.cfg.Resolver)
	if s := n.cfg.Pod.DNS.Search; len(s) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(s, " "))
	}
	ndots := n.cfg.Pod.DNS.Ndots
	if ndots <= 0 {
		ndots = 1
	}
	fmt.Fprintf(&b, "options ndots:%d\n", ndots)
	return []byte(b.String())
}

// Resolve answers one query as the namespace's resolver does.
func (n *Net) Resolve(ctx context.Context, q *dns.Msg) *dns.Msg { return n.resolver.Resolve(ctx, q) }

// DialTCP routes a TCP connection of the process (netstack.Handler).
func (n *Net) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	switch n.routes.Decide(dst.Addr()) {
	case RouteResolver:
		if dst.Port() != 53 {
			return nil, fmt.Errorf("the resolver serves port 53 only")
		}
		near, far := net.Pipe()
		go n.serveDNSStream(far)
		return near, nil
	case RouteCluster:
		c, err := n.cfg.Link.Dial(ctx, tunnel.NetworkTCP, dst)
		if err != nil {
			n.refused(dst, err)
		}
		return c, err
	}
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return d.DialContext(dctx, "tcp", dst.String())
}

// ServeUDP routes one UDP flow of the process (netstack.Handler).
func (n *Net) ServeUDP(conn net.Conn, dst netip.AddrPort) {
	defer conn.Close()
	switch n.routes.Decide(dst.Addr()) {
	case RouteResolver:
		n.serveResolverFlow(conn)
	case RouteCluster:
		st, err := n.cfg.Link.Dial(context.Background(), tunnel.NetworkUDP, dst)
		if err != nil {
			n.refused(dst, err)
			return
		}
		defer st.Close()
		relayUDP(conn, messageConn{st}, udpIdle)
	default:
		uc, err := net.Dial("udp", dst.String())
		if err != nil {
			return
		}
		defer uc.Close()
		relayUDP(conn, uc, udpIdle)
	}
}

func (n *Net) refused(dst netip.AddrPort, err error) {
	if !errors.Is(err, tunnel.ErrDialDenied) || n.cfg.Warn == nil {
		n.cfg.Log.Debug("cluster dial failed", zap.Stringer("destination", dst), zap.Error(err))
		return
	}
	n.warnMu.Lock()
	defer n.warnMu.Unlock()
	key := dst.Addr().String()
	if n.warned[key] || len(n.warned) > 1000 {
		return
	}
	n.warned[key] = true
	n.cfg.Warn(fmt.Sprintf("detour: %s refused by the agent: %v", dst, err))
}

// udpIdle ends a UDP flow that carried nothing for this long.
const udpIdle = 2 * time.Minute

// messageConn makes a dial stream's u16-framed datagrams a packet conn.
type messageConn struct{ net.Conn }

func (m messageConn) Read(p []byte) (int, error) {
	b, err := tunnel.ReadMessage(m.Conn, p)
	return len(b), err
}

func (m messageConn) Write(p []byte) (int, error) {
	if err := tunnel.WriteMessage(m.Conn, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// relayUDP copies datagrams both ways until one side fails or nothing
// crossed in either direction for idle. Each Read returns one datagram,
// each Write sends one.
func relayUDP(a, b net.Conn, idle time.Duration) {
	var once sync.Once
	stop := func() { once.Do(func() { _ = a.Close(); _ = b.Close() }) }
	var last atomic.Int64 // unix nanoseconds of the last datagram, either way
	last.Store(time.Now().UnixNano())
	pipe := func(dst, src net.Conn) {
		defer stop()
		buf := make([]byte, tunnel.MaxDatagram)
		for {
			_ = src.SetReadDeadline(time.Unix(0, last.Load()).Add(idle))
			n, err := src.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, last.Load())) < idle {
					continue // the other direction was active meanwhile
				}
				return
			}
			last.Store(time.Now().UnixNano())
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
	}
	done := make(chan struct{})
	go func() { pipe(b, a); close(done) }()
	pipe(a, b)
	<-done
}

// Resolver flows: a stub resolver sends each query from a new socket and
// waits at most its timeout (5 s for glibc and Go) for the answer, so a
// flow with nothing in flight ends after resolverIdle, and at most
// maxResolverFlows are served at once (past that a query is dropped, and
// counted; the client's retry finds room). The benchmark found the cost
// of keeping each flow for the UDP idle time (2 min, a 64 KiB buffer and a
// goroutine each): ~45 KiB per lookup, 530 MiB at 100 lookups a second.
const (
	resolverIdle     = 5 * time.Second
	maxResolverFlows = 512
	maxQuery         = 4096 // a query is one question: far below this
)

func (n *Net) serveResolverFlow(conn net.Conn) {
	select {
	case n.resolverFlows <- struct{}{}:
		defer func() { <-n.resolverFlows }()
	default:
		n.resolverDropped.Add(1)
		return
	}
	n.serveDNSDatagrams(conn, n.resolverIdle)
}

func (n *Net) serveDNSDatagrams(conn net.Conn, idle time.Duration) {
	buf := make([]byte, maxQuery)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		_ = conn.SetReadDeadline(time.Now().Add(idle))
		k, err := conn.Read(buf)
		if err != nil {
			return
		}
		q := new(dns.Msg)
		if err := q.Unpack(buf[:k]); err != nil {
			continue // not DNS: dropped, as a resolver would
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			n.answerDatagram(conn, q)
		}()
	}
}

func (n *Net) answerDatagram(conn net.Conn, q *dns.Msg) {
	a := n.Resolve(context.Background(), q)
	out, err := a.Pack()
	if err == nil && len(out) > udpAnswerLimit(q) {
		a.Truncate(udpAnswerLimit(q)) // the client retries over TCP
		out, err = a.Pack()
	}
	if err == nil {
		_, _ = conn.Write(out)
	}
}

// ResolverFlowsDropped counts queries dropped because maxResolverFlows
// were being served.
func (n *Net) ResolverFlowsDropped() int64 { return n.resolverDropped.Load() }

func udpAnswerLimit(q *dns.Msg) int {
	if o := q.IsEdns0(); o != nil && int(o.UDPSize()) > dns.MinMsgSize {
		return int(o.UDPSize())
	}
	return dns.MinMsgSize
}

func (n *Net) serveDNSStream(c net.Conn) {
	defer c.Close()
	buf := make([]byte, tunnel.MaxDNSMessage)
	for {
		_ = c.SetReadDeadline(time.Now().Add(udpIdle))
		p, err := tunnel.ReadMessage(c, buf)
		if err != nil {
			return
		}
		q := new(dns.Msg)
		if err := q.Unpack(p); err != nil {
			return
		}
		out, err := n.Resolve(context.Background(), q).Pack()
		if err != nil || tunnel.WriteMessage(c, out) != nil {
			return
		}
	}
}
