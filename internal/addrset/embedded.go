package addrset

import "net/netip"

// embedding is an IPv6 range whose addresses carry an IPv4 address, and
// where in the 16 bytes it sits.
type embedding struct {
	prefix netip.Prefix
	at     [][4]int // the IPv4 address's byte offsets, one layout each
	invert bool     // Teredo stores the client address inverted
}

// RFC 6052's layouts skip byte 8 (the "u" octet).
var (
	layout48 = [4]int{6, 7, 9, 10}
	layout56 = [4]int{7, 9, 10, 11}
	layout64 = [4]int{9, 10, 11, 12}
	layout96 = [4]int{12, 13, 14, 15}
)

var embeddings = []embedding{
	{prefix: netip.MustParsePrefix("64:ff9b::/96"), at: [][4]int{layout96}},                                 // NAT64, well-known (RFC 6052)
	{prefix: netip.MustParsePrefix("64:ff9b:1::/48"), at: [][4]int{layout48, layout56, layout64, layout96}}, // NAT64, local use (RFC 8215): any length
	{prefix: netip.MustParsePrefix("2002::/16"), at: [][4]int{{2, 3, 4, 5}}},                                // 6to4 (RFC 3056)
	{prefix: netip.MustParsePrefix("2001::/32"), at: [][4]int{{4, 5, 6, 7}}},                                // Teredo server (RFC 4380)
	{prefix: netip.MustParsePrefix("2001::/32"), at: [][4]int{{12, 13, 14, 15}}, invert: true},              // Teredo client
	{prefix: netip.MustParsePrefix("::/96"), at: [][4]int{layout96}},                                        // IPv4-compatible (RFC 4291, deprecated)
	{prefix: netip.MustParsePrefix("::ffff:0:0:0/96"), at: [][4]int{layout96}},                              // IPv4-translated (SIIT, RFC 2765)
}

// EmbeddedIPv4 lists the IPv4 addresses an IPv6 address carries for a
// translator or a tunnel to send to (NAT64, 6to4, Teredo, IPv4-compatible,
// IPv4-translated): a rule that refuses an IPv4 address must refuse these
// forms of it too. IPv4-mapped addresses are not listed: Unmap them.
func EmbeddedIPv4(a netip.Addr) []netip.Addr {
	if !a.Is6() || a.Is4In6() {
		return nil
	}
	a = a.WithZone("")
	b := a.As16()
	var out []netip.Addr
	for _, e := range embeddings {
		if !e.prefix.Contains(a) {
			continue
		}
		for _, at := range e.at {
			var v4 [4]byte
			for i, o := range at {
				v4[i] = b[o]
				if e.invert {
					v4[i] = ^v4[i]
				}
			}
			out = append(out, netip.AddrFrom4(v4))
		}
	}
	return out
}
