package clusternet

import (
	"net/netip"
)

// Route is where a connection from the local process goes.
type Route int

const (
	// RouteWorkstation: dialled from the workstation, as without detour
	// (the internet, a VPN, the workstation's own services).
	RouteWorkstation Route = iota
	// RouteCluster: a dial stream; the agent dials from the pod.
	RouteCluster
	// RouteResolver: the namespace's own DNS resolver.
	RouteResolver
)

func (r Route) String() string {
	return [...]string{"workstation", "cluster", "resolver"}[r]
}

// Routes decides, per destination address, where a connection goes.
type Routes struct {
	// Resolver is the address of the namespace's resolver.
	Resolver netip.Addr
	// Cluster are the pod and Service ranges the agent reported, the
	// pod's nameservers, and --also-proxy ranges.
	Cluster []netip.Prefix
	// Learned reports addresses the cluster DNS returned recently.
	Learned func(netip.Addr) bool
}

// Decide routes a connection to dst.
func (r Routes) Decide(dst netip.Addr) Route {
	// Without its zone: a prefix never contains a zoned address, and
	// fe80::1%eth0 must go where fe80::1 goes (the agent, which refuses it).
	dst = dst.Unmap().WithZone("")
	if dst == r.Resolver {
		return RouteResolver
	}
	for _, p := range r.Cluster {
		if p.Contains(dst) {
			return RouteCluster
		}
	}
	if r.Learned != nil && r.Learned(dst) {
		return RouteCluster
	}
	return RouteWorkstation
}
