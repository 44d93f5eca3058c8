package clusternet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/detour-dev/detour/internal/addrset"
	"github.com/detour-dev/detour/tunnel"
)

// Exchanger answers one DNS query.
type Exchanger interface {
	Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error)
}

// Resolver answers the local process's DNS queries (resolver.go's server
// feeds it). Names in the cluster's domain, and reverse lookups of cluster
// addresses, go to the pod's nameservers only; any other name goes to the
// workstation's resolvers first (the internet and a VPN answer as they do
// without detour) and to the pod's when the workstation does not know it.
type Resolver struct {
	Cluster       Exchanger
	Workstation   Exchanger // nil: the cluster alone
	ClusterDomain string
	// IsCluster reports cluster addresses (for reverse lookups).
	IsCluster func(netip.Addr) bool
	// Learn records an address the cluster DNS returned, for its TTL.
	Learn func(netip.Addr, time.Duration)
	Log   *zap.Logger
}

// Source is who answers a query, in order.
type Source int

const (
	SourceCluster Source = iota
	SourceWorkstation
)

// Order says who is asked about name, in turn (a pure decision).
func (r *Resolver) Order(name string, qtype uint16) []Source {
	name = strings.ToLower(dns.Fqdn(name))
	if r.Workstation == nil {
		return []Source{SourceCluster}
	}
	if addrset.InDomain(name, r.ClusterDomain) {
		return []Source{SourceCluster}
	}
	if qtype == dns.TypePTR {
		if a, ok := reverseAddr(name); ok && r.IsCluster != nil && r.IsCluster(a) {
			return []Source{SourceCluster}
		}
	}
	return []Source{SourceWorkstation, SourceCluster}
}

// Resolve answers q; it never fails: the worst answer is SERVFAIL.
func (r *Resolver) Resolve(ctx context.Context, q *dns.Msg) *dns.Msg {
	if len(q.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(q, dns.RcodeFormatError)
		return m
	}
	question := q.Question[0]
	var last *dns.Msg
	for _, src := range r.Order(question.Name, question.Qtype) {
		ex := r.Cluster
		if src == SourceWorkstation {
			ex = r.Workstation
		}
		a, err := ex.Exchange(ctx, q)
		if err != nil {
			r.Log.Debug("dns: no answer", zap.String("name", question.Name), zap.Int("source", int(src)), zap.Error(err))
			continue
		}
		if src == SourceCluster {
			r.learn(a)
		}
		if a.Rcode == dns.RcodeSuccess {
			return a
		}
		if last == nil || a.Rcode == dns.RcodeNameError {
			last = a
		}
	}
	if last != nil {
		last.Id = q.Id
		return last
	}
	m := new(dns.Msg)
	m.SetRcode(q, dns.RcodeServerFailure)
	return m
}

func (r *Resolver) learn(a *dns.Msg) {
	if r.Learn == nil {
		return
	}
	for _, ans := range addrset.Answers(a.Answer) {
		r.Learn(ans.Addr, ans.TTL)
	}
}

// reverseAddr parses a PTR name (4.3.2.1.in-addr.arpa., or the ip6.arpa
// nibble form) into its address.
func reverseAddr(name string) (netip.Addr, bool) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa"); ok {
		p := strings.Split(rest, ".")
		if len(p) != 4 {
			return netip.Addr{}, false
		}
		a, err := netip.ParseAddr(p[3] + "." + p[2] + "." + p[1] + "." + p[0])
		return a, err == nil
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa"); ok {
		n := strings.Split(rest, ".")
		if len(n) != 32 {
			return netip.Addr{}, false
		}
		var b strings.Builder
		for i := 31; i >= 0; i-- {
			b.WriteString(n[i])
			if i%4 == 0 && i > 0 {
				b.WriteByte(':')
			}
		}
		a, err := netip.ParseAddr(b.String())
		return a, err == nil
	}
	return netip.Addr{}, false
}

// streamExchanger asks the pod's nameservers through the agent: one DNS
// stream per query.
type streamExchanger struct {
	open func(ctx context.Context) (net.Conn, error)
}

// dnsTimeout bounds one exchange through the agent (which itself gives
// each of the pod's nameservers 2 s).
const dnsTimeout = 5 * time.Second

func (e streamExchanger) Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, dnsTimeout)
	defer cancel()
	st, err := e.open(ctx)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	dl, _ := ctx.Deadline()
	_ = st.SetDeadline(dl)
	b, err := q.Pack()
	if err != nil {
		return nil, fmt.Errorf("pack query: %w", err)
	}
	if err := tunnel.WriteMessage(st, b); err != nil {
		return nil, err
	}
	p, err := tunnel.ReadMessage(st, make([]byte, tunnel.MaxDNSMessage))
	if err != nil {
		return nil, fmt.Errorf("read the pod's answer: %w", err)
	}
	a := new(dns.Msg)
	if err := a.Unpack(p); err != nil {
		return nil, fmt.Errorf("the pod's answer: %w", err)
	}
	if a.Id != q.Id {
		return nil, errors.New("the pod's answer has another id")
	}
	return a, nil
}

// WorkstationResolvers asks the workstation's own nameservers (those of
// its resolv.conf at path), from the workstation's network.
func WorkstationResolvers(path string) (Exchanger, error) {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("the workstation's resolvers (%s): %w", path, err)
	}
	if len(cc.Servers) == 0 {
		return nil, nil
	}
	port := cc.Port
	if port == "" {
		port = "53"
	}
	var servers []string
	for _, s := range cc.Servers {
		servers = append(servers, net.JoinHostPort(s, port))
	}
	return hostExchanger{servers: servers}, nil
}

type hostExchanger struct{ servers []string }

func (h hostExchanger) Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	udp := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	tcp := &dns.Client{Net: "tcp", Timeout: 2 * time.Second}
	var lastErr error
	for _, s := range h.servers {
		a, _, err := udp.ExchangeContext(ctx, q, s)
		if err == nil && a.Truncated {
			a, _, err = tcp.ExchangeContext(ctx, q, s)
		}
		if err == nil {
			return a, nil
		}
		lastErr = err
	}
	return nil, lastErr
}
