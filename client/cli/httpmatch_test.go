package cli

import (
	"bytes"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/detour-dev/detour/client/internal/daemon"
	"github.com/detour-dev/detour/tunnel"
)

// TestHTTPMatchSettings: the path, method, baggage and auto-header flags
// as httpSettings turns them into what the agent is sent.
func TestHTTPMatchSettings(t *testing.T) {
	cases := []struct {
		name string
		args map[string][]string
		want map[string][]string // the Args entries to check
		err  string
	}{
		{name: "a prefix with auto", args: map[string][]string{"path-prefix": {"/api/"}},
			want: map[string][]string{"match": {"x-detour-intercept-id=01020304:hello"}, "path-prefix": {"/api/"}}},
		{name: "an equal path and methods, comma-separated and repeated", args: map[string][]string{"match": {"x-dev=a"}, "path-equal": {"/h"}, "method": {"get,post", "PUT"}},
			want: map[string][]string{"match": {"x-dev=a"}, "path-equal": {"/h"}, "method": {"GET", "POST", "PUT"}}},
		{name: "a regex", args: map[string][]string{"path-regex": {"/v[0-9]+/.*"}},
			want: map[string][]string{"path-regex": {"/v[0-9]+/.*"}}},
		{name: "a baggage rule", args: map[string][]string{"match": {"baggage:dev=alice"}},
			want: map[string][]string{"match": {"baggage:dev=alice"}}},
		{name: "auto with baggage", args: map[string][]string{"match": {"auto"}, "auto-header": {"baggage"}},
			want: map[string][]string{"match": {"baggage:detour-intercept-id=01020304:hello"}}},
		{name: "auto with a baggage key", args: map[string][]string{"auto-header": {"baggage:dev"}},
			want: map[string][]string{"match": {"baggage:dev=01020304:hello"}}},
		{name: "auto with another header", args: map[string][]string{"auto-header": {"X-Dev"}},
			want: map[string][]string{"match": {"x-dev=01020304:hello"}}},
		{name: "auto-header without auto", args: map[string][]string{"match": {"x=y"}, "auto-header": {"baggage"}}, err: "--http-auto-header shapes the rule --http-match auto makes"},
		{name: "auto-header not a header", args: map[string][]string{"auto-header": {"x dev"}}, err: `--http-auto-header "x dev": want a header name`},
		{name: "two path rules", args: map[string][]string{"path-prefix": {"/a"}, "path-regex": {"/b"}}, err: "--http-path-prefix and --http-path-regex: give one path rule"},
		{name: "a prefix without /", args: map[string][]string{"path-prefix": {"api"}}, err: `--http-path-prefix "api": a path starts with '/'`},
		{name: "not RE2", args: map[string][]string{"path-regex": {`/(a)\1`}}, err: `--http-path-regex "/(a)\\1" is not an RE2 regular expression`},
		{name: "not a method", args: map[string][]string{"method": {"GET /x"}}, err: `--http-method: method "GET /x" is not an HTTP method`},
		{name: "a bad baggage rule", args: map[string][]string{"match": {"baggage:dev"}}, err: `--http-match "baggage:dev": want NAME=VALUE (e.g. --http-match x-dev=alice), baggage:KEY=VALUE or auto`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := httpSettings(tc.args, "hello", corev1.ServicePort{}, tunnel.StrategyHTTP2Probe, false, &counting{})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				if strings.Contains(err.Error(), "bad request") {
					t.Errorf("err %q: the protocol's code is no news to a user", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := s.Args()
			for k, v := range tc.want {
				if strings.Join(got[k], " ") != strings.Join(v, " ") {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			if _, ok := got[flagAutoHeader]; ok {
				t.Error("auto-header is sent to the agent, which does not know it")
			}
			if _, err := tunnel.ParseHTTPArgs(got); err != nil {
				t.Errorf("the agent would refuse these settings: %v", err)
			}
		})
	}
}

// TestHTTPMatchCommandLine: misuse is reported before the cluster is
// asked anything, and --help teaches the flags.
func TestHTTPMatchCommandLine(t *testing.T) {
	for want, args := range map[string][]string{
		"give one path rule":        {"intercept", "hello", "--port", "8080", "--http-path-equal", "/a", "--http-path-prefix", "/b"},
		"is not an RE2 regular":     {"intercept", "hello", "--port", "8080", "--http-path-regex", "(("},
		"is not an HTTP method":     {"intercept", "hello", "--port", "8080", "--http-method", "G{T"},
		"--http-auto-header shapes": {"intercept", "hello", "--port", "8080", "--http-match", "x=y", "--http-auto-header", "baggage"},
		"a path starts with '/'":    {"intercept", "hello", "--port", "8080", "--mechanism", "http", "--http-path-prefix", "api"},
	} {
		var out, errOut bytes.Buffer
		t.Setenv("DETOUR_HOME", t.TempDir())
		t.Setenv("XDG_CONFIG_HOME", t.TempDir())
		root := NewRootCommand(strings.NewReader(""), &out, &errOut)
		root.SetArgs(args)
		if err := root.Execute(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("detour %s: err = %v, want it to contain %q", strings.Join(args, " "), err, want)
		}
	}
	var out, errOut bytes.Buffer
	root := NewRootCommand(strings.NewReader(""), &out, &errOut)
	root.SetArgs([]string{"intercept", "--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--http-path-equal", "--http-path-prefix", "--http-path-regex", "--http-method", "--http-auto-header", "baggage:KEY=VALUE", "RE2", "--http-path-prefix /api/"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("intercept --help lacks %q", want)
		}
	}
}

// TestHTTPMatchRendering: what status, list and the summary print.
func TestHTTPMatchRendering(t *testing.T) {
	st := daemon.InterceptStatus{InterceptRequest: daemon.InterceptRequest{
		Service: "hello", Namespace: "shop",
		HTTPMatch: []string{"baggage:detour-intercept-id=0a:hello", "x-team=blue"},
		Ports:     []daemon.PortRequest{{Port: 80, MechanismArgs: map[string][]string{"method": {"POST", "PUT"}, "path-prefix": {"/api/"}}}},
	}}
	if got, want := httpTakes(st.HTTPMatch, st.First().MechanismArgs), "requests with baggage: detour-intercept-id=0a:hello, x-team: blue; method POST|PUT, path prefix /api/"; got != want {
		t.Errorf("takes %q\nwant  %q", got, want)
	}
	if got, want := tryHint(st), "curl -H 'baggage: detour-intercept-id=0a:hello' -H 'x-team: blue' -X POST 'http://hello.shop:80/api/'"; got != want {
		t.Errorf("try %q\nwant %q", got, want)
	}
	st.Ports[0].MechanismArgs = map[string][]string{"method": {"GET"}, "path-regex": {"/v[0-9]+/items"}}
	if got, want := tryHint(st), "curl -H 'baggage: detour-intercept-id=0a:hello' -H 'x-team: blue' 'http://hello.shop:80/v'   # with a path matching /v[0-9]+/items"; got != want {
		t.Errorf("try %q\nwant %q", got, want)
	}
	st.Ports[0].MechanismArgs = map[string][]string{"method": {"HEAD"}, "path-equal": {"/a b"}}
	if got := tryHint(st); !strings.Contains(got, " --head 'http://hello.shop:80/a%20b'") {
		t.Errorf("try %q: want --head and the path escaped", got)
	}
	if got := requestLineRules(nil); got != "" {
		t.Errorf("no rules: %q", got)
	}
	if name, value := ruleHeader("baggage:dev=a b,c;d%"); name != "baggage" || value != "dev=a%20b%2Cc%3Bd%25" {
		t.Errorf("baggage header %s: %s, want the value percent-encoded", name, value)
	}
}
