package agent

import (
	"bufio"
	"net/http"
	"strings"
	"testing"

	"github.com/detour-dev/detour/tunnel"
)

// FuzzHTTPRouting feeds arbitrary header rules and raw requests to the
// routing decision: it must never panic, and whatever it picks must really
// match (by token, or by every header rule), and nothing it skipped before
// the pick may have matched.
func FuzzHTTPRouting(f *testing.F) {
	f.Add("x-dev=alice", "x-dev=bob\nx-team=blue", "GET /?detour-preview=alice-preview-token-01 HTTP/1.1\r\nHost: a\r\nX-Dev: bob\r\nX-Team: blue\r\n\r\n")
	f.Add("X-Dev=a=b", "cookie=x", "GET / HTTP/1.1\r\nHost: a\r\nCookie: detour-preview=bob-preview-token-0001\r\nx-dev: a=b\r\n\r\n")
	f.Add("", "", "GET / HTTP/1.1\r\n\r\n")
	f.Fuzz(func(t *testing.T, aliceRules, bobRules, raw string) {
		st := &portState{}
		for i, rules := range []string{aliceRules, bobRules} {
			args := map[string][]string{tunnel.ArgMatch: strings.Split(rules, "\n")}
			args[tunnel.ArgPreviewToken] = []string{[]string{"alice", "bob"}[i] + "-preview-token-0" + string(rune('1'+i))}
			s, err := tunnel.ParseHTTPArgs(args)
			if err != nil {
				continue
			}
			st.http = append(st.http, &intercept{name: []string{"alice", "bob"}[i], http: &httpIntercept{settings: s}})
		}
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return
		}
		ic, viaQuery := matchRequest(st, req)
		if ic == nil {
			if viaQuery {
				t.Fatal("no intercept but viaQuery")
			}
			for _, other := range st.http {
				if headersMatch(req.Header, other.http.settings.Match) {
					t.Fatalf("%s's rules match but the request went to the app", other.name)
				}
			}
			return
		}
		token := ic.http.settings.PreviewToken
		byToken := req.URL.Query().Get(tunnel.PreviewQuery) == token
		if c, err := req.Cookie(tunnel.PreviewCookie); err == nil && c.Value == token {
			byToken = true
		}
		if !byToken && !headersMatch(req.Header, ic.http.settings.Match) {
			t.Fatalf("routed to %s, which neither its token nor its rules select", ic.name)
		}
	})
}
