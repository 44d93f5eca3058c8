package nsexec

// Addresses inside the namespace. 198.18.0.0/15 is reserved for network
// benchmarks (RFC 2544) and fd64:6465:746f:7572::/64 a random ULA: neither
// is in use on a workstation or a cluster. The stack answers for every
// address; these only give the namespace's own socket a source address.
const (
	Addr4 = "198.18.0.1"
	// ResolverAddr is where the namespace's resolv.conf sends queries;
	// the stack answers them (the route covers it like any address).
	ResolverAddr = "198.18.0.2"
	Addr6        = "fd64:6465:746f:7572::1"
	TUNName      = "tun0"
	DefaultMTU   = 65520
)
