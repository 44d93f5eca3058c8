package clusternet

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/detour-dev/detour/internal/addrset"
)

func TestRoutesDecide(t *testing.T) {
	r := Routes{
		Resolver: netip.MustParseAddr("198.18.0.2"),
		Cluster:  []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("fe80::/10")},
		Learned:  func(a netip.Addr) bool { return a == netip.MustParseAddr("172.30.0.9") },
	}
	cases := map[string]Route{
		"198.18.0.2":       RouteResolver,
		"10.96.0.10":       RouteCluster,
		"::ffff:10.96.0.1": RouteCluster,
		"10.244.3.4":       RouteCluster,
		"169.254.169.254":  RouteCluster, // the agent refuses it, with the rule
		"172.30.0.9":       RouteCluster, // the cluster DNS returned it
		"93.184.216.34":    RouteWorkstation,
		"192.168.1.10":     RouteWorkstation,
		"2001:db8::1":      RouteWorkstation,
		// A zone must not take a link-local address past the rule to
		// the workstation's own link (a prefix never contains a zoned
		// address): it goes to the agent, which refuses it.
		"fe80::1%eth0":      RouteCluster,
		"fe80::a9fe:a9fe%2": RouteCluster,
	}
	for dst, want := range cases {
		if got := r.Decide(netip.MustParseAddr(dst)); got != want {
			t.Errorf("%s: %s, want %s", dst, got, want)
		}
	}
}

func TestClusterDomain(t *testing.T) {
	cases := []struct {
		search []string
		want   string
	}{
		{[]string{"shop.svc.cluster.local", "svc.cluster.local", "cluster.local"}, "cluster.local"},
		{[]string{"svc.corp.k8s.", "corp.k8s"}, "corp.k8s"},
		{[]string{"shop.svc.prod.example", "example.com"}, "prod.example"},
		{[]string{"example.com"}, ""},
		{nil, ""},
	}
	for _, c := range cases {
		if got := addrset.ClusterDomain(c.search); got != c.want {
			t.Errorf("%v: %q, want %q", c.search, got, c.want)
		}
	}
}

func TestResolverOrder(t *testing.T) {
	r := &Resolver{Cluster: fixed{}, Workstation: fixed{}, ClusterDomain: "cluster.local",
		IsCluster: func(a netip.Addr) bool { return netip.MustParsePrefix("10.96.0.0/16").Contains(a) }}
	cluster := []Source{SourceCluster}
	both := []Source{SourceWorkstation, SourceCluster}
	cases := []struct {
		name  string
		qtype uint16
		want  []Source
	}{
		{"db.shop.svc.cluster.local.", dns.TypeA, cluster},
		{"DB.Shop.SVC.Cluster.Local", dns.TypeAAAA, cluster}, // names are case-insensitive
		{"cluster.local.", dns.TypeSOA, cluster},
		{"notcluster.local.", dns.TypeA, both}, // a suffix, not the domain
		{"example.com.", dns.TypeA, both},
		{"10.0.96.10.in-addr.arpa.", dns.TypePTR, cluster},
		{"1.1.168.192.in-addr.arpa.", dns.TypePTR, both},
		{"garbage.in-addr.arpa.", dns.TypePTR, both},
	}
	for _, c := range cases {
		got := r.Order(c.name, c.qtype)
		if len(got) != len(c.want) || got[0] != c.want[0] {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	if got := (&Resolver{Cluster: fixed{}}).Order("example.com.", dns.TypeA); len(got) != 1 || got[0] != SourceCluster {
		t.Errorf("without workstation resolvers: %v", got)
	}
}

func TestReverseAddr(t *testing.T) {
	cases := map[string]string{
		"4.3.2.1.in-addr.arpa.": "1.2.3.4",
		"b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.ip6.arpa.": "4321:0:1:2:3:4:567:89ab",
	}
	for name, want := range cases {
		got, ok := reverseAddr(name)
		if !ok || got.String() != want {
			t.Errorf("%s: %v %v, want %s", name, got, ok, want)
		}
	}
	for _, bad := range []string{"1.2.3.in-addr.arpa.", "x.y.z.w.in-addr.arpa.", "example.com.", "1.ip6.arpa."} {
		if _, ok := reverseAddr(bad); ok {
			t.Errorf("%s parsed", bad)
		}
	}
}

// fixed answers every query with one rcode (and an A record on success).
type fixed struct {
	rcode int
	err   error
	addr  string
	calls *int
}

func (f fixed) Exchange(_ context.Context, q *dns.Msg) (*dns.Msg, error) {
	if f.calls != nil {
		*f.calls++
	}
	if f.err != nil {
		return nil, f.err
	}
	m := new(dns.Msg)
	m.SetRcode(q, f.rcode)
	if f.rcode == dns.RcodeSuccess && f.addr != "" {
		rr, _ := dns.NewRR(q.Question[0].Name + " 30 IN A " + f.addr)
		m.Answer = append(m.Answer, rr)
	}
	return m, nil
}

func TestResolveFallsBackAndLearns(t *testing.T) {
	var clusterCalls, wsCalls int
	learned := map[netip.Addr]time.Duration{}
	r := &Resolver{
		Cluster:       fixed{rcode: dns.RcodeSuccess, addr: "10.96.0.7", calls: &clusterCalls},
		Workstation:   fixed{rcode: dns.RcodeNameError, calls: &wsCalls},
		ClusterDomain: "cluster.local",
		Learn:         func(a netip.Addr, ttl time.Duration) { learned[a] = ttl },
		Log:           zap.NewNop(),
	}
	q := new(dns.Msg)
	q.SetQuestion("db.internal.corp.", dns.TypeA)
	a := r.Resolve(context.Background(), q)
	if a.Rcode != dns.RcodeSuccess || wsCalls != 1 || clusterCalls != 1 || a.Id != q.Id {
		t.Fatalf("rcode %d, workstation %d, cluster %d", a.Rcode, wsCalls, clusterCalls)
	}
	if learned[netip.MustParseAddr("10.96.0.7")] != 30*time.Second {
		t.Fatalf("cluster answer not learned: %v", learned)
	}
	// Both say NXDOMAIN: the answer is NXDOMAIN, not SERVFAIL.
	r.Cluster = fixed{rcode: dns.RcodeNameError}
	if a := r.Resolve(context.Background(), q); a.Rcode != dns.RcodeNameError {
		t.Fatalf("rcode %d, want NXDOMAIN", a.Rcode)
	}
	// Nobody answers: SERVFAIL, at once.
	r.Cluster, r.Workstation = fixed{err: context.DeadlineExceeded}, fixed{err: context.DeadlineExceeded}
	if a := r.Resolve(context.Background(), q); a.Rcode != dns.RcodeServerFailure {
		t.Fatalf("rcode %d, want SERVFAIL", a.Rcode)
	}
	// Two questions in one message: FORMERR.
	q.Question = append(q.Question, q.Question[0])
	if a := r.Resolve(context.Background(), q); a.Rcode != dns.RcodeFormatError {
		t.Fatalf("rcode %d, want FORMERR", a.Rcode)
	}
}

// FuzzResolve: any message a process sends the resolver gets an answer
// (never a panic), and the pure decisions accept any name.
func FuzzResolve(f *testing.F) {
	q := new(dns.Msg)
	q.SetQuestion("db.shop.svc.cluster.local.", dns.TypeA)
	b, _ := q.Pack()
	f.Add(b)
	f.Add([]byte{0, 1, 0, 0, 0, 1})
	r := &Resolver{Cluster: fixed{rcode: dns.RcodeSuccess, addr: "10.96.0.7"}, Workstation: fixed{rcode: dns.RcodeNameError}, ClusterDomain: "cluster.local", Log: zap.NewNop(),
		IsCluster: func(netip.Addr) bool { return true }}
	f.Fuzz(func(t *testing.T, data []byte) {
		m := new(dns.Msg)
		if m.Unpack(data) != nil {
			return
		}
		a := r.Resolve(context.Background(), m)
		if a == nil {
			t.Fatal("no answer")
		}
		if _, err := a.Pack(); err != nil && len(m.Question) == 1 {
			t.Fatalf("answer does not pack: %v", err)
		}
		for _, qq := range m.Question {
			_, _ = reverseAddr(qq.Name)
			_ = r.Order(qq.Name, qq.Qtype)
		}
	})
}
