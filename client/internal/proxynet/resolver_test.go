package proxynet

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

var podSearch = []string{"shop.svc.cluster.local", "svc.cluster.local", "cluster.local"}

// fakeDNS answers from a table of names (lower-case FQDNs) to addresses,
// NXDOMAIN for the rest, SERVFAIL for names under "broken."; it records
// the questions.
type fakeDNS struct {
	records map[string][]string
	mu      sync.Mutex
	asked   []string
}

func (f *fakeDNS) Resolve(_ context.Context, q *dns.Msg) *dns.Msg {
	qn, qt := strings.ToLower(q.Question[0].Name), q.Question[0].Qtype
	f.mu.Lock()
	f.asked = append(f.asked, dns.TypeToString[qt]+" "+qn)
	f.mu.Unlock()
	a := new(dns.Msg)
	a.SetReply(q)
	addrs, ok := f.records[qn]
	switch {
	case strings.HasSuffix(qn, "broken."):
		a.Rcode = dns.RcodeServerFailure
	case !ok:
		a.Rcode = dns.RcodeNameError
	}
	for _, s := range addrs {
		ip := netip.MustParseAddr(s)
		hdr := dns.RR_Header{Name: qn, Class: dns.ClassINET, Ttl: 30}
		switch {
		case ip.Is4() && qt == dns.TypeA:
			hdr.Rrtype = dns.TypeA
			a.Answer = append(a.Answer, &dns.A{Hdr: hdr, A: net.IP(ip.AsSlice())})
		case ip.Is6() && qt == dns.TypeAAAA:
			hdr.Rrtype = dns.TypeAAAA
			a.Answer = append(a.Answer, &dns.AAAA{Hdr: hdr, AAAA: net.IP(ip.AsSlice())})
		}
	}
	return a
}

func (f *fakeDNS) questions() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.asked...)
}

func TestStubResolverCandidates(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ndots int
		want  []string
	}{
		{"db", 5, []string{"db.shop.svc.cluster.local.", "db.svc.cluster.local.", "db.cluster.local.", "db."}},
		{"db.shop", 5, []string{"db.shop.shop.svc.cluster.local.", "db.shop.svc.cluster.local.", "db.shop.cluster.local.", "db.shop."}},
		{"a.b.c.d.e.f", 5, []string{"a.b.c.d.e.f.", "a.b.c.d.e.f.shop.svc.cluster.local.", "a.b.c.d.e.f.svc.cluster.local.", "a.b.c.d.e.f.cluster.local."}},
		{"example.com", 0, []string{"example.com.", "example.com.shop.svc.cluster.local.", "example.com.svc.cluster.local.", "example.com.cluster.local."}},
		{"db.shop.svc.cluster.local.", 5, []string{"db.shop.svc.cluster.local."}},
	} {
		r := &StubResolver{Search: podSearch, Ndots: tc.ndots}
		if got := r.candidates(tc.name); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s (ndots %d): %v, want %v", tc.name, tc.ndots, got, tc.want)
		}
	}
}

func TestStubResolverLookupHost(t *testing.T) {
	f := &fakeDNS{records: map[string][]string{
		"db.shop.svc.cluster.local.":     {"10.96.0.10", "fd00::10"},
		"db.svc.cluster.local.":          {"10.96.9.9"}, // behind the first search domain: never reached
		"public.example.test.":           {"192.0.2.7"},
		"v6only.shop.svc.cluster.local.": {"fd00::6"},
	}}
	r := &StubResolver{Resolve: f.Resolve, Search: podSearch, Ndots: 5}
	ctx := context.Background()
	for name, want := range map[string]string{
		"db":                         "10.96.0.10 fd00::10",
		"db.shop":                    "10.96.0.10 fd00::10",
		"db.shop.svc.cluster.local":  "10.96.0.10 fd00::10",
		"db.shop.svc.cluster.local.": "10.96.0.10 fd00::10",
		"public.example.test":        "192.0.2.7",
		"v6only":                     "fd00::6",
		"localhost":                  "127.0.0.1 ::1",
		"app.localhost.":             "127.0.0.1 ::1",
		"10.1.2.3":                   "10.1.2.3",
		"fd00::1":                    "fd00::1",
	} {
		addrs, err := r.LookupHost(ctx, name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		var got []string
		for _, a := range addrs {
			got = append(got, a.String())
		}
		if strings.Join(got, " ") != want {
			t.Errorf("%s: %v, want %s", name, got, want)
		}
	}
	f.mu.Lock()
	f.asked = nil
	f.mu.Unlock()
	if _, err := r.LookupHost(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	if q := f.questions(); len(q) != 2 || !strings.HasSuffix(q[0], " db.shop.svc.cluster.local.") || !strings.HasSuffix(q[1], " db.shop.svc.cluster.local.") {
		t.Errorf("db asked %v, want only A and AAAA db.shop.svc.cluster.local. (the search path first)", q)
	}
	for _, name := range []string{"nope", "nope.shop.svc.cluster.local.", "bad..name", ""} {
		if _, err := r.LookupHost(ctx, name); !errors.Is(err, ErrNotFound) {
			t.Errorf("%q: %v, want ErrNotFound", name, err)
		}
	}
	if _, err := r.LookupHost(ctx, "x.broken."); err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "SERVFAIL") {
		t.Errorf("a failing resolver: %v, want an error naming SERVFAIL, not ErrNotFound", err)
	}
}

func TestStubResolverNilAnswer(t *testing.T) {
	r := &StubResolver{Resolve: func(context.Context, *dns.Msg) *dns.Msg { return nil }}
	if _, err := r.LookupHost(context.Background(), "db."); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("got %v, want a failure that is not ErrNotFound", err)
	}
}
