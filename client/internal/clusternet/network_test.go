package clusternet

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/detour-dev/detour/tunnel"
)

func testNet(t *testing.T) *Net {
	t.Helper()
	n, err := New(Config{Link: noLink{}, Pod: tunnel.Network{DNS: tunnel.ResolvConf{Search: []string{"svc.cluster.local"}}},
		Resolver: netip.MustParseAddr("198.18.0.2"), Log: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	n.resolver.Cluster = fixed{rcode: dns.RcodeSuccess, addr: "10.96.0.7"}
	return n
}

// TestResolverFlowsEndAndAreBounded: a resolver flow answers, then ends
// once idle (not after the 2-minute UDP idle time); past the bound, flows
// are refused and counted.
func TestResolverFlowsEndAndAreBounded(t *testing.T) {
	n := testNet(t)
	n.resolverIdle = 200 * time.Millisecond
	near, far := net.Pipe()
	done := make(chan struct{})
	go func() { defer close(done); n.serveResolverFlow(far) }()
	q := new(dns.Msg)
	q.SetQuestion("db.svc.cluster.local.", dns.TypeA)
	b, _ := q.Pack()
	if _, err := near.Write(b); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	k, err := near.Read(buf)
	a := new(dns.Msg)
	if err != nil || a.Unpack(buf[:k]) != nil || len(a.Answer) != 1 {
		t.Fatalf("answer: %v %v", a, err)
	}
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("an idle resolver flow did not end")
	}
	for range maxResolverFlows {
		n.resolverFlows <- struct{}{}
	}
	_, far2 := net.Pipe()
	n.serveResolverFlow(far2) // returns at once: no room
	if n.ResolverFlowsDropped() != 1 {
		t.Fatalf("dropped %d, want 1", n.ResolverFlowsDropped())
	}
}

type noLink struct{}

func (noLink) Dial(context.Context, string, netip.AddrPort) (net.Conn, error) {
	return nil, errors.New("no agent in this test")
}
func (noLink) DNS(context.Context) (net.Conn, error) { return nil, errors.New("no agent in this test") }
