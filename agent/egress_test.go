package agent

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap/zaptest"

	"github.com/detour-dev/detour/tunnel"
)

func TestEgressDecide(t *testing.T) {
	e := Egress{
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("fd00:10::/64")},
		Nameservers:  []netip.Addr{netip.MustParseAddr("192.168.5.10")},
		Allow:        []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")},
	}
	learned := func(a netip.Addr) bool { return a == netip.MustParseAddr("172.20.1.7") }
	cases := []struct {
		dst  string
		rule string
		ok   bool
	}{
		{"10.244.0.12", "cluster-cidr", true},
		{"10.96.0.1", "cluster-cidr", true},
		{"::ffff:10.96.0.1", "cluster-cidr", true}, // mapped form: same rule
		{"fd00:10::5", "cluster-cidr", true},
		{"192.168.5.10", "nameserver", true},
		{"172.20.1.7", "cluster-dns", true},
		{"203.0.113.9", "egress-allow", true},
		{"198.51.100.1", "not-cluster", false},
		{"169.254.169.254", "always-denied", false},
		{"169.254.1.1", "always-denied", false},
		{"fd00:ec2::254", "always-denied", false},
		{"168.63.129.16", "always-denied", false},
		{"fe80::1", "always-denied", false},
		{"127.0.0.1", "always-denied", false},
		{"::1", "always-denied", false},
		{"0.0.0.0", "always-denied", false},
		{"224.0.0.251", "always-denied", false},
		{"255.255.255.255", "always-denied", false},
	}
	for _, c := range cases {
		v := e.Decide(netip.MustParseAddr(c.dst), learned)
		if v.Allowed != c.ok || v.Rule != c.rule {
			t.Errorf("%s: got %+v, want allowed=%v rule=%s", c.dst, v, c.ok, c.rule)
		}
		if !v.Allowed && v.Reason == "" {
			t.Errorf("%s: refusal without a reason", c.dst)
		}
	}
	// No annotation lifts the always-denied ranges, not even "*".
	all := Egress{AllowAll: true, Allow: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16")}}
	for _, dst := range []string{"169.254.169.254", "127.0.0.1", "fd00:ec2::254", "168.63.129.16"} {
		if v := all.Decide(netip.MustParseAddr(dst), nil); v.Allowed {
			t.Errorf("%s allowed by %+v", dst, v)
		}
	}
	if v := all.Decide(netip.MustParseAddr("198.51.100.1"), nil); !v.Allowed || v.Rule != "egress-allow" {
		t.Errorf("* did not allow a public address: %+v", v)
	}
	v := e.Decide(netip.MustParseAddr("198.51.100.1"), nil)
	for _, want := range []string{"detour.dev/egress-allow", "10.244.0.0/16"} {
		if !strings.Contains(v.Reason, want) {
			t.Errorf("refusal %q does not name %q", v.Reason, want)
		}
	}
}

func TestParsePrefixes(t *testing.T) {
	ps, all, err := ParsePrefixes(" 10.0.0.0/8, 192.168.1.5 ,fd00::/8,", "x", false)
	if err != nil || all || len(ps) != 3 || ps[1].String() != "192.168.1.5/32" {
		t.Fatalf("got %v %v %v", ps, all, err)
	}
	if ps, _, _ := ParsePrefixes("10.1.2.3/8", "x", false); ps[0].String() != "10.0.0.0/8" {
		t.Fatalf("not masked: %v", ps)
	}
	if _, all, err := ParsePrefixes("*", "x", true); err != nil || !all {
		t.Fatalf("star: %v %v", all, err)
	}
	for _, bad := range []string{"*", "db.shop", "10.0.0.0/33"} {
		if _, _, err := ParsePrefixes(bad, "--cluster-cidrs", false); err == nil || !strings.Contains(err.Error(), "--cluster-cidrs") {
			t.Errorf("%q: err = %v, want one naming the flag", bad, err)
		}
	}
}

// fakeNameserver answers A queries for names under cluster.local with
// 10.96.0.9, and NXDOMAIN otherwise; it counts the queries it saw.
func fakeNameserver(t *testing.T) (port int, queries *atomic.Int64) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	queries = new(atomic.Int64)
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		queries.Add(1)
		r := new(dns.Msg)
		r.SetReply(q)
		name := q.Question[0].Name
		switch {
		case name == "203.0.113.9.nip.io.": // a public wildcard-DNS name the client chose
			r.Answer = append(r.Answer, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: net.ParseIP("203.0.113.9")})
			_ = w.WriteMsg(r)
			return
		case name == "ext.shop.svc.cluster.local.": // an ExternalName Service: CNAME out of the cluster
			r.Answer = append(r.Answer,
				&dns.CNAME{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 30}, Target: "evil.example."},
				&dns.A{Hdr: dns.RR_Header{Name: "evil.example.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: net.ParseIP("198.51.100.5")})
			_ = w.WriteMsg(r)
			return
		}
		if strings.HasSuffix(name, ".cluster.local.") && q.Question[0].Qtype == dns.TypeA {
			r.Answer = append(r.Answer, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: net.ParseIP("10.96.0.9")})
		} else {
			r.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(r)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().(*net.UDPAddr).Port, queries
}

func dnsAgent(t *testing.T, resolv string) *Agent {
	t.Helper()
	path := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(path, []byte(resolv), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Listeners = []PortMap{{Listen: 1, App: 2}}
	cfg.ResolvConf = path
	a, err := New(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestDNSStreamAnswersWithThePodsNameserversAndLearns(t *testing.T) {
	port, queries := fakeNameserver(t)
	a := dnsAgent(t, "nameserver 127.0.0.1\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n")
	a.dnsPort = port
	if got := a.network().DNS; got.Ndots != 5 || len(got.Search) != 3 || got.Nameservers[0] != "127.0.0.1" {
		t.Fatalf("network DNS = %+v", got)
	}
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() { defer close(done); a.serveDNS(server, zaptest.NewLogger(t)) }()
	ask := func(name string) *dns.Msg {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		b, _ := q.Pack()
		if err := tunnel.WriteMessage(client, b); err != nil {
			t.Fatal(err)
		}
		p, err := tunnel.ReadMessage(client, make([]byte, tunnel.MaxDNSMessage))
		if err != nil {
			t.Fatal(err)
		}
		r := new(dns.Msg)
		if err := r.Unpack(p); err != nil || r.Id != q.Id {
			t.Fatalf("answer %v id %d, want %d", err, r.Id, q.Id)
		}
		return r
	}
	r := ask("db.shop.svc.cluster.local.")
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("answer %v", r)
	}
	if !a.learned.Has(netip.MustParseAddr("10.96.0.9")) {
		t.Fatal("answered address not learned as a cluster destination")
	}
	if v := a.egress.Decide(netip.MustParseAddr("10.96.0.9"), a.learned.Has); !v.Allowed || v.Rule != "cluster-dns" {
		t.Fatalf("learned address: %+v", v)
	}
	if r := ask("nope.example."); r.Rcode != dns.RcodeNameError {
		t.Fatalf("unknown name: rcode %d", r.Rcode)
	}
	// A client must not unlock outside addresses by asking for them: an
	// answer to a question outside the cluster's domain, or a record
	// outside it (an ExternalName's CNAME target), teaches nothing.
	for _, c := range []struct{ name, addr string }{{"203.0.113.9.nip.io.", "203.0.113.9"}, {"ext.shop.svc.cluster.local.", "198.51.100.5"}} {
		if r := ask(c.name); len(r.Answer) == 0 {
			t.Fatalf("%s: no answer", c.name)
		}
		if v := a.egress.Decide(netip.MustParseAddr(c.addr), a.learned.Has); v.Allowed {
			t.Errorf("asking for %s made %s a cluster destination (%s)", c.name, c.addr, v.Rule)
		}
	}
	if queries.Load() != 4 {
		t.Fatalf("nameserver saw %d queries, want 4", queries.Load())
	}
	// Garbage ends the stream; nothing reaches the nameserver.
	_ = tunnel.WriteMessage(client, []byte{1, 2, 3})
	<-done
	client.Close()
	if queries.Load() != 4 {
		t.Fatal("a malformed query was forwarded")
	}
}

func TestDNSWithoutAnsweringNameserverIsServfail(t *testing.T) {
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0") // bound, never answers
	defer pc.Close()
	a := dnsAgent(t, "nameserver 127.0.0.1\n")
	a.dnsPort = pc.LocalAddr().(*net.UDPAddr).Port
	q := new(dns.Msg)
	q.SetQuestion("db.", dns.TypeA)
	start := time.Now()
	if r := a.exchange(q); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("rcode %d", r.Rcode)
	}
	if d := time.Since(start); d > dnsTimeout+time.Second {
		t.Fatalf("took %s", d)
	}
	none := dnsAgent(t, "")
	if r := none.exchange(q); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("no nameserver: rcode %d", r.Rcode)
	}
}

func TestRelayDatagramsKeepsBoundariesAndIdlesOut(t *testing.T) {
	echo, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 70000)
		for {
			n, from, err := echo.ReadFromUDP(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteToUDP(buf[:n], from)
		}
	}()
	uc, err := net.DialUDP("udp", nil, echo.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	client, server := net.Pipe()
	var dropped atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		relayDatagrams(server, uc, 300*time.Millisecond, func() { dropped.Add(1) })
	}()
	buf := make([]byte, tunnel.MaxDatagram)
	for _, size := range []int{1, 512, 1400, 9000, 60000} {
		p := bytes.Repeat([]byte{byte(size)}, size)
		if err := tunnel.WriteMessage(client, p); err != nil {
			t.Fatal(err)
		}
		got, err := tunnel.ReadMessage(client, buf)
		if err != nil || !bytes.Equal(got, p) {
			t.Fatalf("%d bytes: got %d, %v", size, len(got), err)
		}
	}
	select { // idle: the relay ends by itself
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("idle relay did not end")
	}
	client.Close()
}

// TestClusterCIDRsAreFlagOnly: the webhook copies the app's environment
// into the agent, so a DETOUR_CLUSTER_CIDRS there (0.0.0.0/0) must not
// widen the cluster ranges; only the flag sets them.
func TestClusterCIDRsAreFlagOnly(t *testing.T) {
	t.Setenv("DETOUR_CLUSTER_CIDRS", "0.0.0.0/0")
	args := []string{"--redirect-addr", ":15001", "--redirect-ports", "8080"}
	cfg, _, err := parseRunFlags(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Egress.ClusterCIDRs) != 0 {
		t.Fatalf("the environment set the cluster ranges: %v", cfg.Egress.ClusterCIDRs)
	}
	cfg, _, err = parseRunFlags(append(args, "--cluster-cidrs", "10.0.0.0/8"), io.Discard)
	if err != nil || len(cfg.Egress.ClusterCIDRs) != 1 || cfg.Egress.ClusterCIDRs[0].String() != "10.0.0.0/8" {
		t.Fatalf("the flag: %v, %v", cfg.Egress.ClusterCIDRs, err)
	}
}
