package agent

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// TestLearnRefusesAnswersTheClientSpells tries to make an outside address
// a "cluster destination" with an answer the pod's nameserver gives for a
// name in the cluster's domain. Each answer is handed to learn as the pod's
// nameserver sent it; none may teach its address.
func TestLearnRefusesAnswersTheClientSpells(t *testing.T) {
	a := dnsAgent(t, "nameserver 127.0.0.1\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n")
	cases := []struct {
		why      string
		question string
		answer   []string
		addr     string
	}{
		// CoreDNS's `pods insecure` (kubeadm's default Corefile) answers
		// a-b-c-d.NS.pod.DOMAIN with a.b.c.d, checking nothing: the client
		// spells the address it wants.
		{"pod record (pods insecure)", "203-0-113-9.shop.pod.cluster.local.",
			[]string{"203-0-113-9.shop.pod.cluster.local. 30 IN A 203.0.113.9"}, "203.0.113.9"},
		{"IPv6 pod record", "2001-db8--9.shop.pod.cluster.local.",
			[]string{"2001-db8--9.shop.pod.cluster.local. 30 IN AAAA 2001:db8::9"}, "2001:db8::9"},
		{"uppercase pod record", "198-51-100-4.SHOP.POD.CLUSTER.LOCAL.",
			[]string{"198-51-100-4.SHOP.POD.CLUSTER.LOCAL. 30 IN A 198.51.100.4"}, "198.51.100.4"},
		// An ExternalName Service naming a pod record: CoreDNS follows the
		// CNAME inside its own zone.
		{"ExternalName to a pod record", "ext.shop.svc.cluster.local.",
			[]string{"ext.shop.svc.cluster.local. 30 IN CNAME 198-51-100-5.shop.pod.cluster.local.",
				"198-51-100-5.shop.pod.cluster.local. 30 IN A 198.51.100.5"}, "198.51.100.5"},
		// A label holding an escaped dot: "evil.cluster" + "local" is a
		// name under local., not under cluster.local., whatever its text
		// ends with.
		{"escaped dot", `evil\.cluster.local.`,
			[]string{`evil\.cluster.local. 30 IN A 198.51.100.6`}, "198.51.100.6"},
	}
	for _, c := range cases {
		q := new(dns.Msg)
		q.SetQuestion(c.question, dns.TypeA)
		r := new(dns.Msg)
		r.SetReply(q)
		for _, s := range c.answer {
			rr, err := dns.NewRR(s)
			if err != nil {
				t.Fatalf("%s: %v", c.why, err)
			}
			r.Answer = append(r.Answer, rr)
		}
		a.learn(q, r)
		if v := a.egress.Decide(netip.MustParseAddr(c.addr), a.learned.Has); v.Allowed {
			t.Errorf("%s: asking for %s made %s a cluster destination (%s)", c.why, c.question, c.addr, v.Rule)
		}
	}
	// A Service's own record still teaches (the check can fail).
	q := new(dns.Msg)
	q.SetQuestion("db.shop.svc.cluster.local.", dns.TypeA)
	r := new(dns.Msg)
	r.SetReply(q)
	rr, _ := dns.NewRR("db.shop.svc.cluster.local. 30 IN A 172.20.0.7")
	r.Answer = []dns.RR{rr}
	a.learn(q, r)
	if !a.learned.Has(netip.MustParseAddr("172.20.0.7")) {
		t.Fatal("a Service's address was not learned")
	}
}

// TestAlwaysDeniedWhateverTheForm tries the always-denied addresses in
// every other form a dial header can carry, against egress rules that
// allow everything else (the annotation's "*", ranges covering all
// addresses): each must still be refused as always-denied.
func TestAlwaysDeniedWhateverTheForm(t *testing.T) {
	all := Egress{AllowAll: true,
		Allow:        []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")},
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")},
	}
	learned := func(netip.Addr) bool { return true }
	for _, c := range []struct{ dst, why string }{
		{"169.254.169.254", "metadata"},
		{"::ffff:169.254.169.254", "IPv4-mapped"},
		{"127.0.0.1", "loopback"},
		{"127.1.2.3", "loopback /8"},
		{"::ffff:127.0.0.1", "IPv4-mapped loopback"},
		{"::1", "IPv6 loopback"},
		{"0.0.0.0", "unspecified (connects to the pod's own loopback)"},
		{"::", "IPv6 unspecified"},
		{"::ffff:0.0.0.0", "IPv4-mapped unspecified"},
		{"fe80::1", "IPv6 link-local"},
		{"fe80::a9fe:a9fe", "IPv6 link-local"},
		{"febf::1", "IPv6 link-local, top of fe80::/10"},
		{"ff02::1", "IPv6 multicast"},
		{"224.0.0.1", "multicast"},
		{"239.255.255.250", "multicast (SSDP)"},
		{"255.255.255.255", "broadcast"},
		{"fd00:ec2::254", "AWS metadata (IPv6)"},
		{"168.63.129.16", "Azure WireServer"},
		{"100.100.100.200", "Alibaba metadata"},
	} {
		v := all.Decide(netip.MustParseAddr(c.dst), learned)
		if v.Allowed || v.Rule != "always-denied" || v.Reason == "" {
			t.Errorf("%s (%s): %+v, want refused as always-denied with a reason", c.dst, c.why, v)
		}
	}
	// The same rules let an ordinary address through: the check can fail.
	if v := all.Decide(netip.MustParseAddr("198.51.100.1"), learned); !v.Allowed {
		t.Fatalf("an ordinary address refused: %+v", v)
	}
}

// TestZonedAddressesAreAlwaysDenied: an IPv6 zone (fe80::1%eth0) made
// netip.Prefix.Contains false, so the always-denied ranges let a zoned
// link-local or loopback address through to "*".
func TestZonedAddressesAreAlwaysDenied(t *testing.T) {
	all := Egress{AllowAll: true}
	for _, dst := range []string{"fe80::1%eth0", "fe80::1%1", "::1%lo", "ff02::1%eth0", "fd00:ec2::254%eth0", "::%lo"} {
		if v := all.Decide(netip.MustParseAddr(dst), nil); v.Allowed || v.Rule != "always-denied" {
			t.Errorf("%s: %+v, want always-denied", dst, v)
		}
	}
}

func TestZonedClusterAddressIsRefused(t *testing.T) {
	e := Egress{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("fd00:10::/64")}}
	if v := e.Decide(netip.MustParseAddr("fd00:10::5%eth0"), nil); v.Allowed || !strings.Contains(v.Reason, "zone") {
		t.Fatalf("zoned cluster address: %+v", v)
	}
	if v := e.Decide(netip.MustParseAddr("fd00:10::5"), nil); !v.Allowed {
		t.Fatalf("cluster address: %+v", v)
	}
}

// TestEmbeddedIPv4IsJudgedToo: IPv6 forms that carry an IPv4 address a
// translator or a tunnel on the node would send to — NAT64 (RFC 6052:
// 64:ff9b::/96 and the local-use 64:ff9b:1::/48), 6to4, Teredo (the
// client address, inverted), IPv4-compatible and IPv4-translated — are
// refused when that IPv4 address is, and the cloud's other IPv6 metadata
// addresses (GCP, AWS's EKS Pod Identity, Scaleway) with them.
func TestEmbeddedIPv4IsJudgedToo(t *testing.T) {
	all := Egress{AllowAll: true}
	for _, c := range []struct{ dst, why string }{
		{"64:ff9b::a9fe:a9fe", "NAT64 well-known prefix, 169.254.169.254"},
		{"64:ff9b::169.254.169.254", "NAT64, dotted"},
		{"64:ff9b::7f00:1", "NAT64 to 127.0.0.1"},
		{"64:ff9b:1:a9fe:a9:fe00::", "NAT64 local-use /48"},
		{"64:ff9b:1:0:a9:fea9:fe00:0", "NAT64 local-use /64"},
		{"64:ff9b:1::a9fe:a9fe", "NAT64 local-use /96"},
		{"2002:a9fe:a9fe::1", "6to4 of 169.254.169.254"},
		{"2002:7f00:1::1", "6to4 of 127.0.0.1"},
		{"2001:0:4136:e378:8000:63bf:5601:5601", "Teredo, client 169.254.169.254"},
		{"::a9fe:a9fe", "IPv4-compatible"},
		{"::ffff:0:a9fe:a9fe", "IPv4-translated (SIIT)"},
		{"fd20:ce::254", "GCP metadata (IPv6)"},
		{"fd00:ec2::23", "AWS EKS Pod Identity agent (IPv6)"},
		{"fd00:42::42", "Scaleway metadata (IPv6)"},
	} {
		if v := all.Decide(netip.MustParseAddr(c.dst), nil); v.Allowed || v.Rule != "always-denied" {
			t.Errorf("%s (%s): %+v, want always-denied", c.dst, c.why, v)
		}
	}
	// The same forms of an ordinary address pass: the check can fail.
	for _, dst := range []string{"64:ff9b::c633:6401", "2002:c633:6401::1", "2001:db8::1"} {
		if v := all.Decide(netip.MustParseAddr(dst), nil); !v.Allowed {
			t.Errorf("%s refused: %+v", dst, v)
		}
	}
}

// TestNameserverIsOpenOnlyForDNS: a pod's nameserver outside the cluster
// ranges (dnsPolicy Default: the node's resolver, often the node itself)
// was open on every port — the kubelet's 10250 on a node that serves DNS.
func TestNameserverIsOpenOnlyForDNS(t *testing.T) {
	e := Egress{Nameservers: []netip.Addr{netip.MustParseAddr("192.168.5.10")}}
	for _, c := range []struct {
		dst  string
		ok   bool
		rule string
	}{
		{"192.168.5.10:53", true, "nameserver"},
		{"192.168.5.10:10250", false, "not-cluster"},
		{"192.168.5.10:22", false, "not-cluster"},
		{"[::ffff:192.168.5.10]:10250", false, "not-cluster"},
	} {
		v := e.DecideDial(netip.MustParseAddrPort(c.dst), nil)
		if v.Allowed != c.ok || v.Rule != c.rule {
			t.Errorf("%s: %+v, want allowed=%v rule=%s", c.dst, v, c.ok, c.rule)
		}
		if !v.Allowed && !strings.Contains(v.Reason, "port 53") {
			t.Errorf("%s: reason %q does not say the nameserver is open on port 53", c.dst, v.Reason)
		}
	}
	// Another rule still opens the address on every port.
	e.Allow = []netip.Prefix{netip.MustParsePrefix("192.168.5.0/24")}
	if v := e.DecideDial(netip.MustParseAddrPort("192.168.5.10:10250"), nil); !v.Allowed || v.Rule != "egress-allow" {
		t.Errorf("allowed by the annotation: %+v", v)
	}
}
