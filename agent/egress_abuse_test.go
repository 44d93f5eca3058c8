package agent

import (
	"net/netip"
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
