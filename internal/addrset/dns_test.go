package addrset

import (
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestAnswers(t *testing.T) {
	var rrs []dns.RR
	for _, s := range []string{"db. 30 IN A 10.96.0.7", "db. 60 IN AAAA fd00::7", "db. 30 IN CNAME other.", "db. 5 IN TXT \"x\""} {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		rrs = append(rrs, rr)
	}
	got := Answers(rrs)
	if len(got) != 2 || got[0].Addr.String() != "10.96.0.7" || got[0].TTL != 30*time.Second || got[0].Type != dns.TypeA ||
		got[1].Addr.String() != "fd00::7" || got[1].Type != dns.TypeAAAA {
		t.Fatalf("got %+v", got)
	}
}

func TestTeaches(t *testing.T) {
	for _, c := range []struct {
		name string
		want bool
	}{
		{"db.shop.svc.cluster.local.", true},
		{"web-0.web.shop.svc.cluster.local", true},
		{"DB.SHOP.SVC.CLUSTER.LOCAL.", true},
		{"10-244-1-5.shop.pod.cluster.local.", false},
		{"10-244-1-5.shop.POD.cluster.local.", false},
		{"203.0.113.9.nip.io.", false},
		{`evil\.cluster.local.`, false}, // labels "evil.cluster", "local"
		{`evil\046cluster.local.`, false},
		{"xcluster.local.", false},
		{"cluster.local", true},
	} {
		if got := Teaches(c.name, "cluster.local"); got != c.want {
			t.Errorf("Teaches(%q) = %v, want %v", c.name, got, c.want)
		}
	}
	if Teaches("db.shop.svc.cluster.local.", "") {
		t.Error("taught without a cluster domain")
	}
}
