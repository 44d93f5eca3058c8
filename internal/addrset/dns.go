package addrset

import (
	"net"
	"net/netip"
	"time"

	"github.com/miekg/dns"
)

// Answer is one address a DNS answer carried, with its TTL.
type Answer struct {
	Addr netip.Addr
	TTL  time.Duration
	Type uint16 // dns.TypeA or dns.TypeAAAA
}

// Answers lists the A and AAAA records of rrs (an answer section), the
// one rule the agent (egress), the client's resolver (routing) and the
// proxy fallback (dialling) read addresses from DNS by.
func Answers(rrs []dns.RR) []Answer {
	var out []Answer
	for _, rr := range rrs {
		var ip net.IP
		switch rr := rr.(type) {
		case *dns.A:
			ip = rr.A
		case *dns.AAAA:
			ip = rr.AAAA
		default:
			continue
		}
		if addr, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, Answer{Addr: addr.Unmap(), TTL: time.Duration(rr.Header().Ttl) * time.Second, Type: rr.Header().Rrtype})
		}
	}
	return out
}
