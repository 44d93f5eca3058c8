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
