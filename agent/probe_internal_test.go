package agent

import (
	"testing"
	"time"

	"github.com/detour-dev/detour/tunnel"
)

func TestMatchProbe(t *testing.T) {
	a := []byte(tunnel.ProbePrefix + "aaaa\n")
	b := []byte(tunnel.ProbePrefix + "bbbb\n")
	for _, tc := range []struct {
		got  string
		want probeMatch
	}{
		{"", needMore},
		{"DETOUR", needMore},
		{tunnel.ProbePrefix + "aa", needMore},
		{tunnel.ProbePrefix + "aaaa\n", probeLine},
		{tunnel.ProbePrefix + "bbbb\nmore", probeLine},
		{tunnel.ProbePrefix + "ab", notProbe},
		{"GET / HTTP/1.1\r\n", notProbe},
		{"D", needMore},
		{"DX", notProbe},
		{tunnel.ProbePrefix + "aaaa\r", notProbe},
	} {
		if got := matchProbe([]byte(tc.got), [][]byte{a, b}); got != tc.want {
			t.Errorf("matchProbe(%q) = %d, want %d", tc.got, got, tc.want)
		}
	}
}

func TestProbesExpireAndCheckTheirRequest(t *testing.T) {
	now := time.Unix(1000, 0)
	p := newProbes(func() time.Time { return now })
	tok := "0123456789abcdef0123456789abcdef"
	p.arm(tunnel.ExpectProbe{Port: 80, Token: tok, TTLMillis: 1000})
	if got := p.lines(80); len(got) != 1 || string(got[0]) != tunnel.ProbePrefix+tok+"\n" {
		t.Fatalf("armed lines = %q", got)
	}
	if got := p.lines(81); got != nil {
		t.Fatalf("another port armed: %q", got)
	}
	now = now.Add(time.Second)
	if got := p.lines(80); got != nil {
		t.Fatalf("expired token still armed: %q", got)
	}
	for _, tc := range []struct {
		req tunnel.ExpectProbe
		ok  bool
	}{
		{tunnel.ExpectProbe{Port: 80, Token: tok, TTLMillis: 1}, true},
		{tunnel.ExpectProbe{Port: 80, Token: tok, TTLMillis: tunnel.MaxProbeTTL.Milliseconds()}, true},
		{tunnel.ExpectProbe{Port: 80, Token: tok, TTLMillis: tunnel.MaxProbeTTL.Milliseconds() + 1}, false},
		{tunnel.ExpectProbe{Port: 80, Token: tok, TTLMillis: 0}, false},
		{tunnel.ExpectProbe{Port: 80, Token: "short", TTLMillis: 10}, false},
		{tunnel.ExpectProbe{Port: 80, Token: "zz" + tok[2:], TTLMillis: 10}, false},
	} {
		if err := checkExpectProbe(tc.req); (err == nil) != tc.ok {
			t.Errorf("checkExpectProbe(%+v) = %v, want ok=%v", tc.req, err, tc.ok)
		}
	}
}
