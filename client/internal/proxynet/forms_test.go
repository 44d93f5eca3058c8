package proxynet

import (
	"net/netip"
	"strings"
	"testing"
)

// TestSOCKS5DomainNamesAreNotAddresses: a SOCKS5 domain name that a
// resolver or URL parser would read as 169.254.169.254 (inet_aton's
// decimal, octal and hex forms, a trailing dot) is a name here, looked up
// like any other — never dialled as that address; a name the pod's DNS
// answers with it reaches the agent, which refuses it. Uppercase and a
// trailing dot resolve as the name does; a name too long for DNS fails.
func TestSOCKS5DomainNamesAreNotAddresses(t *testing.T) {
	f := startProxies(t, testPassword, 0)
	auth := &[2]string{User, testPassword}
	const unreachable, refused = 4, 2
	for _, tc := range []struct {
		host string
		want byte
	}{
		{"2852039166", unreachable},
		{"0251.0376.0251.0376", unreachable},
		{"0xa9.0xfe.0xa9.0xfe", unreachable},
		{"0xa9fea9fe", unreachable},
		{"169.254.43518", unreachable},
		{"169.254.169.254.", unreachable},
		{"META", refused},                         // meta.shop.svc.cluster.local: the agent refuses
		{"meta.shop.svc.cluster.local.", refused}, // fully qualified, trailing dot
		{strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 60), unreachable},
	} {
		if rep := socksRequest(t, f.px.SOCKS.String(), auth, tc.host, 80, 1); rep != tc.want {
			t.Errorf("%.40s: reply %d, want %d", tc.host, rep, tc.want)
		}
	}
	meta := netip.MustParseAddr("169.254.169.254")
	n := 0
	for _, d := range f.net.destinations() {
		if d.Addr() != meta {
			t.Errorf("dialled %s", d)
		}
		n++
	}
	if n != 2 { // META and meta.shop.svc.cluster.local., each refused by the "agent"
		t.Errorf("%d dials, want the 2 the DNS answered", n)
	}
}
