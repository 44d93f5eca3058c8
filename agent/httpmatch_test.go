package agent

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/detour-dev/detour/tunnel"
)

// settingsOf parses rule lines as the fuzz test does: method=, path-*= lines
// are those settings, any other a header (or baggage) rule.
func settingsOf(t testing.TB, rules ...string) tunnel.HTTPSettings {
	t.Helper()
	args := map[string][]string{}
	for _, line := range rules {
		key, value, _ := strings.Cut(line, "=")
		switch key {
		case tunnel.ArgMethod, tunnel.ArgPathEqual, tunnel.ArgPathPrefix, tunnel.ArgPathRegex:
			args[key] = append(args[key], value)
		default:
			args[tunnel.ArgMatch] = append(args[tunnel.ArgMatch], line)
		}
	}
	s, err := tunnel.ParseHTTPArgs(args)
	if err != nil {
		t.Fatalf("%q: %v", rules, err)
	}
	return s
}

func ruledIC(t testing.TB, name string, o *owner, rules ...string) *intercept {
	return &intercept{name: name, port: 80, mechanism: tunnel.MechanismHTTP, owner: o,
		http: &httpIntercept{settings: settingsOf(t, rules...)}}
}

// TestMatchRequestPathMethodBaggage: method and path rules AND with the
// header rules; baggage rules match one member of the baggage header.
func TestMatchRequestPathMethodBaggage(t *testing.T) {
	cases := []struct {
		name    string
		rules   []string
		method  string
		target  string
		headers [][2]string
		want    bool
	}{
		{"header only, any path", []string{"x-dev=a"}, "GET", "/x", [][2]string{{"X-Dev", "a"}}, true},
		{"prefix matches", []string{"x-dev=a", "path-prefix=/api/"}, "GET", "/api/v1", [][2]string{{"X-Dev", "a"}}, true},
		{"prefix is a plain string prefix", []string{"x-dev=a", "path-prefix=/api"}, "GET", "/apis", [][2]string{{"X-Dev", "a"}}, true},
		{"prefix does not match", []string{"x-dev=a", "path-prefix=/api/"}, "GET", "/web/api/", [][2]string{{"X-Dev", "a"}}, false},
		{"prefix ignores the query", []string{"x-dev=a", "path-prefix=/api/"}, "GET", "/?p=/api/", [][2]string{{"X-Dev", "a"}}, false},
		{"path matches, header does not", []string{"x-dev=a", "path-prefix=/api/"}, "GET", "/api/v1", [][2]string{{"X-Dev", "b"}}, false},
		{"equal", []string{"x-dev=a", "path-equal=/health"}, "GET", "/health", [][2]string{{"X-Dev", "a"}}, true},
		{"equal is not a prefix", []string{"x-dev=a", "path-equal=/health"}, "GET", "/healthz", [][2]string{{"X-Dev", "a"}}, false},
		{"equal compares the decoded path", []string{"x-dev=a", "path-equal=/a b"}, "GET", "/a%20b", [][2]string{{"X-Dev", "a"}}, true},
		{"regex matches the whole path", []string{"x-dev=a", "path-regex=/v[0-9]+/items"}, "GET", "/v2/items", [][2]string{{"X-Dev", "a"}}, true},
		{"regex is anchored at the end", []string{"x-dev=a", "path-regex=/v[0-9]+/items"}, "GET", "/v2/items/7", [][2]string{{"X-Dev", "a"}}, false},
		{"regex is anchored at the start", []string{"x-dev=a", "path-regex=/v[0-9]+/items"}, "GET", "/x/v2/items", [][2]string{{"X-Dev", "a"}}, false},
		{"regex alternation stays anchored", []string{"x-dev=a", "path-regex=/a|/b"}, "GET", "/ab", [][2]string{{"X-Dev", "a"}}, false},
		{"method matches", []string{"x-dev=a", "method=post"}, "POST", "/", [][2]string{{"X-Dev", "a"}}, true},
		{"one of the methods", []string{"x-dev=a", "method=GET", "method=HEAD"}, "HEAD", "/", [][2]string{{"X-Dev", "a"}}, true},
		{"method does not match", []string{"x-dev=a", "method=POST"}, "GET", "/", [][2]string{{"X-Dev", "a"}}, false},
		{"all three", []string{"x-dev=a", "method=PUT", "path-prefix=/api/"}, "PUT", "/api/x", [][2]string{{"X-Dev", "a"}}, true},
		{"baggage member", []string{"baggage:dev=alice"}, "GET", "/", [][2]string{{"Baggage", "k=1,dev=alice;p=q"}}, true},
		{"baggage member with spaces", []string{"baggage:dev=alice"}, "GET", "/", [][2]string{{"Baggage", "k=1 , dev = alice ; p=q"}}, true},
		{"baggage member percent-encoded", []string{"baggage:dev=a b"}, "GET", "/", [][2]string{{"Baggage", "dev=a%20b"}}, true},
		{"baggage value is exact", []string{"baggage:dev=alice"}, "GET", "/", [][2]string{{"Baggage", "dev=alice2"}}, false},
		{"baggage key is exact", []string{"baggage:dev=alice"}, "GET", "/", [][2]string{{"Baggage", "Dev=alice,xdev=alice"}}, false},
		{"baggage in a second header line", []string{"baggage:dev=alice"}, "GET", "/", [][2]string{{"Baggage", "k=1"}, {"Baggage", "dev=alice"}}, true},
		{"baggage property is not a member", []string{"baggage:dev=alice"}, "GET", "/", [][2]string{{"Baggage", "k=1;dev=alice"}}, false},
		{"no baggage", []string{"baggage:dev=alice"}, "GET", "/", [][2]string{{"X-Dev", "alice"}}, false},
		{"baggage and a header", []string{"baggage:dev=alice", "x-team=blue"}, "GET", "/", [][2]string{{"Baggage", "dev=alice"}, {"X-Team", "blue"}}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := &portState{http: []*intercept{ruledIC(t, "a", nil, c.rules...)}}
			r := httptest.NewRequest(c.method, "http://app"+c.target, nil)
			for _, h := range c.headers {
				r.Header.Add(h[0], h[1])
			}
			ic, _ := matchRequest(st, r)
			if got := ic != nil; got != c.want {
				t.Fatalf("%s %s %v with rules %q: matched=%v, want %v", c.method, c.target, c.headers, c.rules, got, c.want)
			}
		})
	}
}

// TestPreviewTokenKeepsPathAndMethodRules: a browser's preview cookie
// stands for the header rules, not for the path and method ones; the link
// still arms the cookie when its page goes to the app.
func TestPreviewTokenKeepsPathAndMethodRules(t *testing.T) {
	ic := ruledIC(t, "a", nil, "x-dev=a", "path-prefix=/api/")
	ic.http.settings.PreviewToken = "a-preview-token-0123456789"
	st := &portState{http: []*intercept{ic}}
	for _, c := range []struct {
		target, cookie string
		routed, armed  bool
	}{
		{"/?detour-preview=a-preview-token-0123456789", "", false, true},
		{"/api/x?detour-preview=a-preview-token-0123456789", "", true, true},
		{"/api/x", "a-preview-token-0123456789", true, false},
		{"/", "a-preview-token-0123456789", false, false},
		{"/api/x?detour-preview=another-token-0123456789", "", false, false},
	} {
		r := httptest.NewRequest(http.MethodGet, "http://app"+c.target, nil)
		if c.cookie != "" {
			r.AddCookie(&http.Cookie{Name: tunnel.PreviewCookie, Value: c.cookie})
		}
		got, armed := matchRequest(st, r)
		if (got != nil) != c.routed || (armed != nil) != c.armed {
			t.Errorf("%s cookie %q: routed=%v armed=%v, want %v %v", c.target, c.cookie, got != nil, armed != nil, c.routed, c.armed)
		}
	}
}

// TestRuleSetsWithPathsAndMethodsMustBeDisjoint extends the rule of
// TestHTTPRuleSetsOfDifferentOwnersMustBeDisjoint: another developer's rule
// set is accepted when a header differs, or the methods do, or no path can
// satisfy both path rules — proven, never guessed.
func TestRuleSetsWithPathsAndMethodsMustBeDisjoint(t *testing.T) {
	alice, bob := testOwner("alice@laptop", "a-secret"), testOwner("bob@desk", "b-secret")
	cases := []struct {
		name          string
		first, second []string
		ok            bool
	}{
		{"the same header, no path rules", []string{"x-team=blue"}, []string{"x-team=blue"}, false},
		{"a path rule narrows but does not separate", []string{"x-team=blue"}, []string{"x-team=blue", "path-prefix=/api/"}, false},
		{"different prefixes", []string{"x-team=blue", "path-prefix=/api/"}, []string{"x-team=blue", "path-prefix=/web/"}, true},
		{"nested prefixes", []string{"x-team=blue", "path-prefix=/api/"}, []string{"x-team=blue", "path-prefix=/api/v2/"}, false},
		{"a prefix of the other as a string", []string{"x-team=blue", "path-prefix=/api"}, []string{"x-team=blue", "path-prefix=/apis"}, false},
		{"different equal paths", []string{"x-team=blue", "path-equal=/a"}, []string{"x-team=blue", "path-equal=/b"}, true},
		{"the same equal path", []string{"x-team=blue", "path-equal=/a"}, []string{"x-team=blue", "path-equal=/a"}, false},
		{"an equal path under a prefix", []string{"x-team=blue", "path-prefix=/api/"}, []string{"x-team=blue", "path-equal=/api/x"}, false},
		{"an equal path outside a prefix", []string{"x-team=blue", "path-prefix=/api/"}, []string{"x-team=blue", "path-equal=/web"}, true},
		{"an equal path the regex matches", []string{"x-team=blue", "path-regex=/v[0-9]/x"}, []string{"x-team=blue", "path-equal=/v1/x"}, false},
		{"an equal path the regex does not match", []string{"x-team=blue", "path-regex=/v[0-9]/x"}, []string{"x-team=blue", "path-equal=/v1/y"}, true},
		{"regexes with diverging literal prefixes", []string{"x-team=blue", "path-regex=/v1/.*"}, []string{"x-team=blue", "path-regex=/v2/.*"}, true},
		{"regexes differing after their literals: not proven", []string{"x-team=blue", "path-regex=/v1/a.*"}, []string{"x-team=blue", "path-regex=/v1/[b-z].*"}, false},
		{"identical regexes", []string{"x-team=blue", "path-regex=/v1/.*"}, []string{"x-team=blue", "path-regex=/v1/.*"}, false},
		{"a case-insensitive regex has no literal prefix", []string{"x-team=blue", "path-regex=(?i)/v1/.*"}, []string{"x-team=blue", "path-regex=/v2/.*"}, false},
		{"a regex and a diverging prefix", []string{"x-team=blue", "path-regex=/v1/.*"}, []string{"x-team=blue", "path-prefix=/web/"}, true},
		{"a regex and a prefix within it", []string{"x-team=blue", "path-regex=/v1/.*"}, []string{"x-team=blue", "path-prefix=/v"}, false},
		{"different methods", []string{"x-team=blue", "method=GET"}, []string{"x-team=blue", "method=POST"}, true},
		{"a method in common", []string{"x-team=blue", "method=GET", "method=POST"}, []string{"x-team=blue", "method=POST"}, false},
		{"methods on one side only", []string{"x-team=blue"}, []string{"x-team=blue", "method=POST"}, false},
		{"baggage members with different values", []string{"baggage:dev=alice"}, []string{"baggage:dev=bob"}, true},
		{"baggage members with different keys", []string{"baggage:dev=alice"}, []string{"baggage:user=bob"}, false},
		{"baggage keys are case-sensitive", []string{"baggage:dev=alice"}, []string{"baggage:Dev=bob"}, false},
		{"a baggage member and the whole baggage header", []string{"baggage:dev=alice"}, []string{"baggage=dev=bob"}, false},
		{"a superset by baggage", []string{"baggage:dev=alice"}, []string{"baggage:dev=alice", "x-team=blue"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRegistry([]uint16{80})
			if _, err := r.create(ruledIC(t, "a", alice, c.first...)); err != nil {
				t.Fatal(err)
			}
			_, err := r.create(ruledIC(t, "b", bob, c.second...))
			if c.ok != (err == nil) {
				t.Fatalf("%q then %q: %v, want ok=%v", c.first, c.second, err, c.ok)
			}
			if err != nil && (!errors.Is(err, tunnel.ErrAlreadyIntercepted) || !strings.Contains(err.Error(), "alice@laptop")) {
				t.Fatalf("refusal %v: want ErrAlreadyIntercepted naming the holder", err)
			}
			// Disjointness is symmetric: the other order decides the same.
			if got := disjoint(&ruledIC(t, "a", alice, c.second...).http.settings, &ruledIC(t, "b", bob, c.first...).http.settings); got != c.ok {
				t.Fatalf("disjoint(second, first) = %v, want %v", got, c.ok)
			}
		})
	}
}

// TestOwnRuleSetsDifferByPathOrMethod: one developer may hold overlapping
// intercepts, but not the same rule set twice — path and method count.
func TestOwnRuleSetsDifferByPathOrMethod(t *testing.T) {
	alice := testOwner("alice@laptop", "a-secret")
	r := newRegistry([]uint16{80})
	for _, c := range []struct {
		name  string
		rules []string
		ok    bool
	}{
		{"a", []string{"x-dev=a"}, true},
		{"b", []string{"x-dev=a", "path-prefix=/api/"}, true},
		{"c", []string{"x-dev=a", "path-prefix=/api/", "method=POST"}, true},
		{"d", []string{"x-dev=a", "method=post", "path-prefix=/api/"}, false},
		{"e", []string{"x-dev=a", "path-regex=/api/.*"}, true},
	} {
		_, err := r.create(ruledIC(t, c.name, alice, c.rules...))
		if c.ok != (err == nil) {
			t.Fatalf("%s %q: %v, want ok=%v", c.name, c.rules, err, c.ok)
		}
	}
	// The most specific first: c (3 rules), then b and e (2), then a.
	if got := strings.Join(names(r.lookup(80).http), ","); got != "c,b,e,a" {
		t.Fatalf("order %s, want c,b,e,a", got)
	}
	list := r.list(alice)
	if len(list) != 4 || list[2].Name != "c" || list[2].Path != "path-prefix=/api/" || strings.Join(list[2].Methods, ",") != "POST" {
		t.Fatalf("list %+v: want c with its path and method", list)
	}
}

func TestRegexLiteralPrefix(t *testing.T) {
	for expr, want := range map[string]string{
		"/v1/.*":          "/v1/",
		"/v1/items":       "/v1/items",
		"^/v1/x$":         "/v1/x",
		"(/v1)/(a|b)":     "/v1/",
		"(?i)/v1/.*":      "",
		"/v(?i)1":         "/v",
		"[/]v1":           "/v1", // a one-character class is simplified to a literal
		"a|b":             "",
		"/v1?":            "/v",
		"/(?:api|apis)/x": "/api", // the parser factors the common prefix out
		"":                "",
	} {
		if got := regexLiteralPrefix(expr); got != want {
			t.Errorf("regexLiteralPrefix(%q) = %q, want %q", expr, got, want)
		}
	}
}
