package tunnel

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// TestParseHTTPArgsPathMethodBaggage: the path, method and baggage
// settings as the agent reads them from CreateIntercept.Args, and back.
func TestParseHTTPArgsPathMethodBaggage(t *testing.T) {
	cases := []struct {
		name    string
		args    map[string][]string
		methods []string
		path    string
		match   []string
		err     string // in the error, "" for none
	}{
		{name: "methods upper-cased, repeats dropped", args: map[string][]string{ArgMatch: {"x=y"}, ArgMethod: {"get", "POST", "GET"}}, methods: []string{"GET", "POST"}, match: []string{"x=y"}},
		{name: "a prefix", args: map[string][]string{ArgMatch: {"x=y"}, ArgPathPrefix: {"/api/"}}, path: "path-prefix=/api/", match: []string{"x=y"}},
		{name: "an equal path", args: map[string][]string{ArgMatch: {"x=y"}, ArgPathEqual: {"/health"}}, path: "path-equal=/health", match: []string{"x=y"}},
		{name: "a regex", args: map[string][]string{ArgMatch: {"x=y"}, ArgPathRegex: {`/v[0-9]+/.*`}}, path: `path-regex=/v[0-9]+/.*`, match: []string{"x=y"}},
		{name: "a baggage rule", args: map[string][]string{ArgMatch: {"baggage:dev=alice", "x=y"}}, match: []string{"baggage:dev=alice", "x=y"}},
		{name: "a baggage rule, prefix in any case", args: map[string][]string{ArgMatch: {"Baggage:dev=a=b"}}, match: []string{"baggage:dev=a=b"}},
		{name: "the whole baggage header is a header rule", args: map[string][]string{ArgMatch: {"baggage=dev=alice"}}, match: []string{"baggage=dev=alice"}},
		{name: "two path rules", args: map[string][]string{ArgMatch: {"x=y"}, ArgPathPrefix: {"/a"}, ArgPathEqual: {"/b"}}, err: "one path rule"},
		{name: "two prefixes", args: map[string][]string{ArgMatch: {"x=y"}, ArgPathPrefix: {"/a", "/b"}}, err: "one path rule"},
		{name: "a prefix without /", args: map[string][]string{ArgMatch: {"x=y"}, ArgPathPrefix: {"api"}}, err: "starts with '/'"},
		{name: "an empty prefix", args: map[string][]string{ArgMatch: {"x=y"}, ArgPathPrefix: {""}}, err: "1..1024 bytes"},
		{name: "a control character", args: map[string][]string{ArgMatch: {"x=y"}, ArgPathEqual: {"/a\nb"}}, err: "control characters"},
		{name: "a long regex", args: map[string][]string{ArgMatch: {"x=y"}, ArgPathRegex: {strings.Repeat("a", 1025)}}, err: "1..1024 bytes"},
		{name: "not RE2", args: map[string][]string{ArgMatch: {"x=y"}, ArgPathRegex: {`/(a)\1`}}, err: "not an RE2 regular expression"},
		{name: "unbalanced", args: map[string][]string{ArgMatch: {"x=y"}, ArgPathRegex: {`/a)(`}}, err: "not an RE2 regular expression"},
		{name: "an expression that would escape the anchors", args: map[string][]string{ArgMatch: {"x=y"}, ArgPathRegex: {`/a)|(.*`}}, err: "not an RE2 regular expression"},
		{name: "not a method", args: map[string][]string{ArgMatch: {"x=y"}, ArgMethod: {"GET /"}}, err: "not an HTTP method"},
		{name: "too many methods", args: map[string][]string{ArgMatch: {"x=y"}, ArgMethod: strings.Split(strings.Repeat("A,", 17)[:33], ",")}, err: "at most 16"},
		{name: "a path needs a header too", args: map[string][]string{ArgPathPrefix: {"/api/"}}, err: "at least one header match"},
		{name: "a baggage key that is no token", args: map[string][]string{ArgMatch: {"baggage:a b=c"}}, err: "not a baggage key"},
		{name: "a baggage rule without value", args: map[string][]string{ArgMatch: {"baggage:dev="}}, err: "non-empty"},
		{name: "a baggage rule without =", args: map[string][]string{ArgMatch: {"baggage:dev"}}, err: "want baggage:KEY=VALUE"},
		{name: "an unknown key names the new ones", args: map[string][]string{ArgMatch: {"x=y"}, "path": {"/"}}, err: "method, path-equal, path-prefix, path-regex"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := ParseHTTPArgs(c.args)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) || !errors.Is(err, ErrBadRequest) {
					t.Fatalf("err %v, want bad_request with %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var match []string
			for _, m := range s.Match {
				match = append(match, m.String())
			}
			if !reflect.DeepEqual(s.Methods, c.methods) || s.Path.String() != c.path || !reflect.DeepEqual(match, c.match) {
				t.Fatalf("methods %q path %q match %q; want %q %q %q", s.Methods, s.Path.String(), match, c.methods, c.path, c.match)
			}
			if s.Path.Kind == ArgPathRegex && s.Path.Regexp == nil {
				t.Fatal("regex not compiled")
			}
			// Args round-trips.
			back, err := ParseHTTPArgs(s.Args())
			if err != nil {
				t.Fatalf("re-parse %v: %v", s.Args(), err)
			}
			if back.Path.String() != s.Path.String() || !reflect.DeepEqual(back.Methods, s.Methods) || !reflect.DeepEqual(back.Match, s.Match) {
				t.Fatalf("round trip %+v, want %+v", back, s)
			}
		})
	}
}

func TestPathMatchMatches(t *testing.T) {
	for _, c := range []struct {
		kind, value, path string
		want              bool
	}{
		{ArgPathEqual, "/a", "/a", true},
		{ArgPathEqual, "/a", "/a/", false},
		{ArgPathPrefix, "/a", "/ab", true},
		{ArgPathPrefix, "/a/", "/a", false},
		{ArgPathRegex, "/a/.*", "/a/b/c", true},
		{ArgPathRegex, "/a/.*", "/b/a/c", false},
		{ArgPathRegex, "/a|/b", "/b", true},
		{ArgPathRegex, "/a|/b", "/ba", false},
		{ArgPathRegex, "(?i)/A", "/a", true},
	} {
		p, err := ParsePathMatch(c.kind, c.value)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Matches(c.path); got != c.want {
			t.Errorf("%s=%s on %s: %v, want %v", c.kind, c.value, c.path, got, c.want)
		}
	}
	var any PathMatch
	if !any.Matches("/whatever") {
		t.Error("no path rule must take any path")
	}
}
