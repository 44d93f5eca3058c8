package agent

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/detour-dev/detour/tunnel"
)

// benchPort is a port with three developers' header-only intercepts, as
// BenchmarkHTTPRouting's pod has one: the per-request routing decision
// alone, without the network.
func benchPort(b *testing.B, extra map[string][]string) *portState {
	st := &portState{}
	for _, dev := range []string{"alice", "bob", "carol"} {
		args := map[string][]string{tunnel.ArgMatch: {"x-dev=" + dev, "x-team=blue"}}
		for k, v := range extra {
			args[k] = v
		}
		s, err := tunnel.ParseHTTPArgs(args)
		if err != nil {
			b.Fatal(err)
		}
		st.http = append(st.http, &intercept{name: dev, http: &httpIntercept{settings: s}})
	}
	return st
}

// BenchmarkMatchRequest: header-only rules must cost what they did before
// path, method and baggage rules existed (0 allocations per request); so
// do method and path rules, and baggage (BenchmarkBaggageMatch).
func BenchmarkMatchRequest(b *testing.B) {
	for _, c := range []struct {
		name  string
		extra map[string][]string
		hdr   [][2]string
	}{
		{"headers/to-app", nil, [][2]string{{"User-Agent", "curl"}, {"Accept", "*/*"}}},
		{"headers/to-carol", nil, [][2]string{{"X-Dev", "carol"}, {"X-Team", "blue"}, {"Accept", "*/*"}}},
		{"method+regex/to-carol", map[string][]string{tunnel.ArgMethod: {"GET"}, tunnel.ArgPathRegex: {"/api/v[0-9]+/.*"}}, [][2]string{{"X-Dev", "carol"}, {"X-Team", "blue"}}},
		{"prefix/to-app", map[string][]string{tunnel.ArgPathPrefix: {"/api/"}}, [][2]string{{"User-Agent", "curl"}}},
	} {
		b.Run(c.name, func(b *testing.B) {
			st := benchPort(b, c.extra)
			r := httptest.NewRequest(http.MethodGet, "http://app/api/v1/items", nil)
			for _, h := range c.hdr {
				r.Header.Set(h[0], h[1])
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				matchRequest(st, r)
			}
		})
	}
}

func BenchmarkBaggageMatch(b *testing.B) {
	st := &portState{}
	for _, dev := range []string{"alice", "bob", "carol"} {
		s, err := tunnel.ParseHTTPArgs(map[string][]string{tunnel.ArgMatch: {"baggage:" + tunnel.AutoBaggageKey + "=" + dev}})
		if err != nil {
			b.Fatal(err)
		}
		st.http = append(st.http, &intercept{name: dev, http: &httpIntercept{settings: s}})
	}
	r := httptest.NewRequest(http.MethodGet, "http://app/api/v1/items", nil)
	r.Header.Set("Baggage", "userId=alice,serverNode=DF%2028,isProduction=false, detour-intercept-id = carol;ttl=3")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if ic, _ := matchRequest(st, r); ic == nil || ic.name != "carol" {
			b.Fatal("not routed to carol")
		}
	}
}
