package addrset

import (
	"net"
	"net/netip"
	"strings"
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

// ClusterDomain is the cluster's DNS domain, read from the pod's search
// path: the part after "svc." of the first entry that has it
// ("shop.svc.cluster.local svc.cluster.local cluster.local" → cluster.local);
// "" when the search path has none.
func ClusterDomain(search []string) string {
	for _, s := range search {
		s = strings.TrimSuffix(strings.ToLower(s), ".")
		if rest, ok := strings.CutPrefix(s, "svc."); ok && rest != "" {
			return rest
		}
		if i := strings.Index(s, ".svc."); i >= 0 {
			return s[i+len(".svc."):]
		}
	}
	return ""
}

// InDomain reports whether name is domain or below it, label by label
// (case-insensitive, with or without the final dot: `evil\.cluster.local`
// is the label "evil.cluster" under local., not a name in cluster.local);
// false when domain is "".
func InDomain(name, domain string) bool {
	if domain == "" || domain == "." {
		return false
	}
	return dns.IsSubDomain(dns.Fqdn(domain), dns.Fqdn(name))
}

// Teaches reports whether an address record named name may make its
// address a cluster destination: the name is in the cluster's domain and
// is not a pod record (A-B-C-D.NAMESPACE.pod.DOMAIN), which CoreDNS answers
// from the name itself (`pods insecure`, kubeadm's default, checks
// nothing) — the client would be spelling the address it wants unlocked.
func Teaches(name, domain string) bool {
	return InDomain(name, domain) && !InDomain(name, "pod."+strings.TrimSuffix(domain, "."))
}
