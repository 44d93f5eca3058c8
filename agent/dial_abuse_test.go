package agent_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/detour-dev/detour/agent"
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
