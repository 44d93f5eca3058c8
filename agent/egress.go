package agent

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/detour-dev/detour/internal/addrset"
)

// Egress is who may use the pod's network reach through StreamDial. A
// port-forward used to reach only the pod's own ports; a dial stream
// reaches whatever the pod reaches, so the agent keeps that explicit:
//
//  1. never: the addresses in alwaysDenied (loopback, link-local and the
//     cloud metadata services, multicast, unspecified), in any form (an
//     IPv6 zone, an IPv4 address inside NAT64, 6to4 or Teredo) — no
//     annotation lifts this;
//  2. cluster destinations: the pod and Service ranges the agent is
//     configured with (ClusterCIDRs), the pod's nameservers (port 53
//     only: DecideDial), and addresses the cluster DNS returned through
//     this agent for names in the cluster's domain (for their TTL; dns.go,
//     learn);
//  3. anything else only where the workload's owner allows it: the
//     detour.dev/egress-allow annotation (CIDRs, or * for any address).
type Egress struct {
	ClusterCIDRs []netip.Prefix
	Nameservers  []netip.Addr
	Allow        []netip.Prefix
	AllowAll     bool
}

// deniedRange is an address range no dial may reach, and why.
type deniedRange struct {
	prefix netip.Prefix
	why    string
}

var alwaysDenied = []deniedRange{
	{netip.MustParsePrefix("169.254.169.254/32"), "the cloud metadata service (instance credentials)"},
	{netip.MustParsePrefix("fd00:ec2::254/128"), "the cloud metadata service (instance credentials)"},
	{netip.MustParsePrefix("fd20:ce::254/128"), "the cloud metadata service (instance credentials)"},
	{netip.MustParsePrefix("fd00:42::42/128"), "the cloud metadata service (instance credentials)"},
	{netip.MustParsePrefix("fd00:ec2::23/128"), "EKS's Pod Identity agent (the workload's cloud credentials)"},
	{netip.MustParsePrefix("100.100.100.200/32"), "the cloud metadata service (instance credentials)"},
	{netip.MustParsePrefix("168.63.129.16/32"), "Azure's host service (WireServer: VM extensions and their settings)"},
	{netip.MustParsePrefix("169.254.0.0/16"), "a link-local address (node-local and metadata services)"},
	{netip.MustParsePrefix("fe80::/10"), "a link-local address (node-local and metadata services)"},
	{netip.MustParsePrefix("127.0.0.0/8"), "the pod's loopback (use --to-pod for the pod's own ports)"},
	{netip.MustParsePrefix("::1/128"), "the pod's loopback (use --to-pod for the pod's own ports)"},
	{netip.MustParsePrefix("0.0.0.0/8"), "an unspecified address"},
	{netip.MustParsePrefix("::/128"), "an unspecified address"},
	{netip.MustParsePrefix("224.0.0.0/4"), "a multicast address"},
	{netip.MustParsePrefix("ff00::/8"), "a multicast address"},
	{netip.MustParsePrefix("255.255.255.255/32"), "the broadcast address"},
}

// Verdict is the outcome of an egress decision; Rule names what decided
// it, for the metric label and the message the developer sees.
type Verdict struct {
	Allowed bool
	Rule    string // always-denied, cluster-cidr, nameserver, cluster-dns, egress-allow, not-cluster
	Reason  string // for a refusal: a sentence naming the rule and the fix
}

// Decide says whether dst may be dialled. learned reports whether the
// cluster DNS returned dst recently.
func (e Egress) Decide(dst netip.Addr, learned func(netip.Addr) bool) Verdict {
	dst = dst.Unmap()
	// A prefix never contains a zoned address (fe80::1%eth0, ::1%lo):
	// judge the address itself, and refuse a zone anyway — it names one of
	// the pod's own links, which only link-local addresses need.
	zone := dst.Zone()
	dst = dst.WithZone("")
	if v, denied := alwaysDeniedVerdict(dst); denied {
		return v
	}
	if zone != "" {
		return Verdict{Rule: "always-denied", Reason: fmt.Sprintf("%s%%%s has a zone, which names one of the pod's own links: detour never dials it from the pod", dst, zone)}
	}
	for _, p := range e.ClusterCIDRs {
		if p.Contains(dst) {
			return Verdict{Allowed: true, Rule: "cluster-cidr"}
		}
	}
	for _, ns := range e.Nameservers {
		if ns == dst {
			return Verdict{Allowed: true, Rule: "nameserver"}
		}
	}
	if learned != nil && learned(dst) {
		return Verdict{Allowed: true, Rule: "cluster-dns"}
	}
	if e.AllowAll {
		return Verdict{Allowed: true, Rule: "egress-allow"}
	}
	for _, p := range e.Allow {
		if p.Contains(dst) {
			return Verdict{Allowed: true, Rule: "egress-allow"}
		}
	}
	return Verdict{Rule: "not-cluster", Reason: fmt.Sprintf(
		"%s is not a cluster destination (not in the pod or Service ranges %s, not returned by the cluster DNS): the workload's owner may allow it with the pod annotation detour.dev/egress-allow=CIDR[,CIDR…]",
		dst, prefixList(e.ClusterCIDRs))}
}

// alwaysDeniedVerdict refuses dst when it, or an IPv4 address it carries
// for a translator or tunnel (NAT64, 6to4, Teredo: addrset.EmbeddedIPv4),
// is in alwaysDenied.
func alwaysDeniedVerdict(dst netip.Addr) (Verdict, bool) {
	for _, a := range append([]netip.Addr{dst}, addrset.EmbeddedIPv4(dst)...) {
		for _, d := range alwaysDenied {
			if !d.prefix.Contains(a) {
				continue
			}
			why := d.why
			if a != dst {
				why = fmt.Sprintf("a form of %s, %s", a, d.why)
			}
			return Verdict{Rule: "always-denied", Reason: fmt.Sprintf("%s is %s: detour never dials it from the pod", dst, why)}, true
		}
	}
	return Verdict{}, false
}

func prefixList(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "(none configured)"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// ParsePrefixes reads a comma-separated list of CIDRs or single addresses
// (a bare address is its /32 or /128). "*" sets all, when allowStar.
func ParsePrefixes(s, what string, allowStar bool) (prefixes []netip.Prefix, all bool, err error) {
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		switch {
		case f == "":
			continue
		case f == "*" && allowStar:
			all = true
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			prefixes = append(prefixes, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %q is not a CIDR or an IP address", what, f)
		}
		prefixes = append(prefixes, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return prefixes, all, nil
}

// DecideDial is Decide for a dial to dst's port: a nameserver outside the
// other rules is a cluster destination for DNS only (port 53) — with
// dnsPolicy Default it is the node's resolver, often the node itself,
// whose other ports (the kubelet's) are no cluster destination.
func (e Egress) DecideDial(dst netip.AddrPort, learned func(netip.Addr) bool) Verdict {
	v := e.Decide(dst.Addr(), learned)
	if v.Rule != "nameserver" || dst.Port() == 53 {
		return v
	}
	e.Nameservers = nil
	if v = e.Decide(dst.Addr(), learned); !v.Allowed {
		v.Reason = fmt.Sprintf("%s is one of the pod's nameservers, a cluster destination on port 53 only; %s", dst.Addr().Unmap(), v.Reason)
	}
	return v
}
