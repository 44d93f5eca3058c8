package agent_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/detour-dev/detour/agent"
	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/tunnel"
)

// TestDialOutZonedLoopbackIsRefused dials the pod's own loopback through
// a zone (::1%lo) with the annotation's "*": a server listening on [::1]
// must not be reached.
func TestDialOutZonedLoopbackIsRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("debug port\n"))
			_ = c.Close()
		}
	}()
	w := startAgent(t, func(c *agent.Config) { c.Egress.AllowAll = true })
	s, _ := openClient(t, w, "mallory@laptop", tunnel.Config{})
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	dst := netip.AddrPortFrom(netip.MustParseAddr("::1").WithZone("lo"), port)
	c, err := s.Dial(context.Background(), "tcp", dst)
	if err == nil {
		c.Close()
		t.Fatalf("%s reached the pod's loopback", dst)
	}
	if !errors.Is(err, tunnel.ErrDialDenied) || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("%s: err = %v, want ErrDialDenied naming the loopback", dst, err)
	}
}

// TestDialOutRefusalsTable proves, by dialling, the refusals a developer
// with pods/portforward meets trying to reach what the rules keep out:
// each is ErrDialDenied naming its rule, and counted.
func TestDialOutRefusalsTable(t *testing.T) {
	w := startAgent(t, func(c *agent.Config) {
		c.Egress.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
	})
	s, _ := openClient(t, w, "mallory@laptop", tunnel.Config{})
	tunnelPort := w.tunnel[strings.LastIndex(w.tunnel, ":")+1:]
	cases := []struct{ network, dst, reason string }{
		{"udp", "8.8.8.8:53", "detour.dev/egress-allow"}, // an arbitrary resolver
		{"tcp", "1.1.1.1:853", "detour.dev/egress-allow"},
		{"tcp", "[64:ff9b::a9fe:a9fe]:80", "a form of 169.254.169.254"},
		{"tcp", "[2002:a9fe:a9fe::1]:80", "a form of 169.254.169.254"},
		{"tcp", "[::ffff:169.254.169.254]:80", "metadata"},
		{"tcp", "[fd20:ce::254]:80", "metadata"},
		{"tcp", "[fe80::1%eth0]:80", "link-local"},
		{"tcp", "0.0.0.0:" + tunnelPort, "unspecified"}, // 0.0.0.0 connects to the pod itself
		{"tcp", "[::]:" + tunnelPort, "unspecified"},
		{"tcp", "[::ffff:127.0.0.1]:" + tunnelPort, "loopback"},
		{"tcp", "127.0.0.2:" + tunnelPort, "loopback"},
		{"udp", "255.255.255.255:67", "broadcast"},
		{"udp", "224.0.0.251:5353", "multicast"},
		{"udp", "[ff02::1]:547", "multicast"},
	}
	for _, c := range cases {
		conn, err := s.Dial(context.Background(), c.network, netip.MustParseAddrPort(c.dst))
		if err == nil {
			conn.Close()
			t.Errorf("%s %s: dialled", c.network, c.dst)
			continue
		}
		if !errors.Is(err, tunnel.ErrDialDenied) || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%s %s: err = %v, want ErrDialDenied naming %q", c.network, c.dst, err, c.reason)
		}
	}
	body := agentMetricsText(t, w)
	for _, want := range []string{
		`detour_agent_egress_dials_total{network="tcp",outcome="denied",rule="always-denied"} 9`,
		`detour_agent_egress_dials_total{network="tcp",outcome="denied",rule="not-cluster"} 1`,
		`detour_agent_egress_dials_total{network="udp",outcome="denied",rule="always-denied"} 3`,
		`detour_agent_egress_dials_total{network="udp",outcome="denied",rule="not-cluster"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestClientStreamsAreBounded: each stream a client opens holds a
// goroutine in the agent and, once dialled, a socket in the pod; a client
// opening them without end must meet a bound, not exhaust the pod's
// descriptors (which the app's own traffic through the agent needs).
func TestClientStreamsAreBounded(t *testing.T) {
	w := startAgent(t, func(c *agent.Config) { c.MaxClientStreams = 8 })
	s, _ := openClient(t, w, "mallory@laptop", tunnel.Config{})
	appPort := anAppPort(w)
	ctx := context.Background()
	held := holdPodStreams(t, s, appPort, 8)
	c, err := s.DialPod(ctx, appPort)
	if err == nil {
		c.Close()
		t.Fatal("a ninth stream was served past the bound of 8")
	}
	if !strings.Contains(agentMetricsText(t, w), `detour_agent_pod_dials_total{outcome="busy"} 1`) {
		t.Error("the refused stream was not counted")
	}
	_, derr := s.Dial(ctx, "tcp", netip.MustParseAddrPort("10.244.0.9:80"))
	if !errors.Is(derr, tunnel.ErrDialDenied) || !strings.Contains(derr.Error(), "streams open") {
		t.Errorf("dial past the bound: %v, want ErrDialDenied naming the bound", derr)
	}
	held[0].Close()
	dialPodOnceFree(t, s, appPort)
}

// TestClientStreamsAreBoundedAcrossSessions: sessions are not bounded, so
// the per-session bound alone leaves the agent's total open: all sessions
// together hold at most four times MaxClientStreams.
func TestClientStreamsAreBoundedAcrossSessions(t *testing.T) {
	w := startAgent(t, func(c *agent.Config) { c.MaxClientStreams = 2 })
	appPort := anAppPort(w)
	ctx := context.Background()
	var held []net.Conn
	for range 4 {
		s, _ := openClient(t, w, "mallory@laptop", tunnel.Config{})
		held = append(held, holdPodStreams(t, s, appPort, 2)...)
	}
	s, _ := openClient(t, w, "mallory@laptop", tunnel.Config{})
	if c, err := s.DialPod(ctx, appPort); err == nil {
		c.Close()
		t.Fatal("a fifth session's stream was served past the agent's bound of 8")
	}
	held[0].Close()
	dialPodOnceFree(t, s, appPort)
}

// anAppPort is one of the agent's app ports (a pod-local port to dial).
func anAppPort(w *world) uint16 {
	for p := range w.agent.Addrs().Listeners {
		return p
	}
	return 0
}

// dialPodOnceFree dials port until a stream closed a moment ago has freed
// its place under the bound.
func dialPodOnceFree(t *testing.T, s *client.Session, port uint16) net.Conn {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := s.DialPod(context.Background(), port)
		if err == nil {
			t.Cleanup(func() { c.Close() })
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("a closed stream did not free its place: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// holdPodStreams opens n pod dials on s and holds them open until the test
// ends.
func holdPodStreams(t *testing.T, s *client.Session, port uint16, n int) []net.Conn {
	t.Helper()
	var held []net.Conn
	for range n {
		c, err := s.DialPod(context.Background(), port)
		if err != nil {
			t.Fatalf("stream %d: %v", len(held)+1, err)
		}
		t.Cleanup(func() { c.Close() })
		held = append(held, c)
	}
	return held
}
