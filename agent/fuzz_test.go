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
// the pick may have matched; method and path rules hold on top of either.
func FuzzHTTPRouting(f *testing.F) {
	f.Add("x-dev=alice", "x-dev=bob\nx-team=blue", "GET /?detour-preview=alice-preview-token-01 HTTP/1.1\r\nHost: a\r\nX-Dev: bob\r\nX-Team: blue\r\n\r\n")
	f.Add("X-Dev=a=b", "cookie=x", "GET / HTTP/1.1\r\nHost: a\r\nCookie: detour-preview=bob-preview-token-0001\r\nx-dev: a=b\r\n\r\n")
	f.Add("", "", "GET / HTTP/1.1\r\n\r\n")
	f.Add("baggage:dev=alice\nmethod=POST\npath-prefix=/api/", "baggage:dev=bob\npath-regex=/api/v[0-9]+/.*", "POST /api/v2/x HTTP/1.1\r\nHost: a\r\nBaggage: k=1, dev = bob;p=1, dev=alic%65\r\n\r\n")
	f.Fuzz(func(t *testing.T, aliceRules, bobRules, raw string) {
		st := &portState{}
		for i, rules := range []string{aliceRules, bobRules} {
			// A line KEY=VALUE whose KEY is a method or path setting is that
			// setting; any other line is a header (or baggage) rule.
			args := map[string][]string{}
			for _, line := range strings.Split(rules, "\n") {
				key, value, _ := strings.Cut(line, "=")
				switch key {
				case tunnel.ArgMethod, tunnel.ArgPathEqual, tunnel.ArgPathPrefix, tunnel.ArgPathRegex:
					args[key] = append(args[key], value)
				default:
					args[tunnel.ArgMatch] = append(args[tunnel.ArgMatch], line)
				}
			}
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
		ic, armed := matchRequest(st, req)
		if ic == nil {
			if armed != nil && armed.http.settings.PreviewToken != req.URL.Query().Get(tunnel.PreviewQuery) {
				t.Fatal("armed by a token the query does not carry")
			}
			for _, other := range st.http {
				if headersMatch(req.Header, other.http.settings.Match) && requestLineMatches(req, &other.http.settings) {
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
		if !requestLineMatches(req, &ic.http.settings) {
			t.Fatalf("routed to %s, whose method or path rule does not match %s %s", ic.name, req.Method, req.URL.Path)
		}
	})
}
