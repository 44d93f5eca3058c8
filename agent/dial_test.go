package agent_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/detour-dev/detour/agent"
	"github.com/detour-dev/detour/tunnel"
)

// TestDialOutRefusesWhatTheEgressRulesDeny proves the refusals by trying
// them: the cloud metadata address, the pod's loopback (and so every
// pod-local port but through --to-pod), and an address outside the
// cluster's ranges. Each is refused with a reason naming the rule, and
// counted; the session carries on.
func TestDialOutRefusesWhatTheEgressRulesDeny(t *testing.T) {
	w := startAgent(t, func(c *agent.Config) {
		c.Egress.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
		c.PodIP = "10.244.0.7"
	})
	s, _ := openClient(t, w, "alice@laptop", tunnel.Config{})
	ctx := context.Background()
	cases := []struct {
		network, dst, reason string
	}{
		{"tcp", "169.254.169.254:80", "metadata"},
		{"udp", "169.254.169.254:53", "metadata"},
		{"tcp", "[fd00:ec2::254]:80", "metadata"},
		{"tcp", "127.0.0.1:" + strings.TrimPrefix(w.front[strings.LastIndex(w.front, ":"):], ":"), "--to-pod"},
		{"tcp", "198.51.100.1:443", "detour.dev/egress-allow"},
	}
	for _, c := range cases {
		_, err := s.Dial(ctx, c.network, netip.MustParseAddrPort(c.dst))
		if !errors.Is(err, tunnel.ErrDialDenied) || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%s %s: err = %v, want ErrDialDenied naming %q", c.network, c.dst, err, c.reason)
		}
	}
	if _, err := s.Ping(ctx); err != nil {
		t.Fatalf("session after refusals: %v", err)
	}
	n, err := s.Network(ctx)
	if err != nil || n.PodIP != "10.244.0.7" || len(n.ClusterCIDRs) != 1 || n.ClusterCIDRs[0] != "10.244.0.0/16" {
		t.Fatalf("network = %+v, %v", n, err)
	}
	resp, err := http.Get("http://" + w.agent.Addrs().Metrics.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`detour_agent_egress_dials_total{network="tcp",outcome="denied",rule="always-denied"} 3`,
		`detour_agent_egress_dials_total{network="udp",outcome="denied",rule="always-denied"} 1`,
		`detour_agent_egress_dials_total{network="tcp",outcome="denied",rule="not-cluster"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
