package cli

import (
	"bytes"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/detour-dev/detour/tunnel"
)

// counting is a deterministic stand-in for crypto/rand.
type counting struct{ n byte }

func (c *counting) Read(p []byte) (int, error) {
	for i := range p {
		c.n++
		p[i] = c.n
	}
	return len(p), nil
}

func TestHTTPSettings(t *testing.T) {
	grpc := "grpc"
	sp := corev1.ServicePort{Name: "web", Port: 80, AppProtocol: &grpc}
	cases := []struct {
		name    string
		args    map[string][]string
		preview bool
		want    []string // NAME=VALUE rules
		err     string
	}{
		{name: "no flag means auto", args: nil, want: []string{"x-detour-intercept-id=01020304:hello"}},
		{name: "auto", args: map[string][]string{"match": {"auto"}}, want: []string{"x-detour-intercept-id=01020304:hello"}},
		{name: "rules, names lower-cased", args: map[string][]string{"match": {"X-Dev=alice", "x-env=dev"}}, want: []string{"x-dev=alice", "x-env=dev"}},
		{name: "value may hold =", args: map[string][]string{"match": {"x-q=a=b"}}, want: []string{"x-q=a=b"}},
		{name: "malformed", args: map[string][]string{"match": {"x-dev"}}, err: `--http-match "x-dev": want NAME=VALUE`},
		{name: "bad name", args: map[string][]string{"match": {"x dev=a"}}, err: "want NAME=VALUE"},
		{name: "empty value", args: map[string][]string{"match": {"x-dev="}}, err: "want NAME=VALUE"},
		{name: "auto and rules", args: map[string][]string{"match": {"auto", "x=y"}}, err: "cannot be combined"},
		{name: "preview token", args: map[string][]string{"plaintext": {"true"}}, preview: true, want: []string{"x-detour-intercept-id=01020304:hello"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := httpSettings(tc.args, "hello", sp, tunnel.StrategyHTTP2Probe, tc.preview, &counting{})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := s.Args()
			if strings.Join(got[tunnel.ArgMatch], " ") != strings.Join(tc.want, " ") {
				t.Errorf("rules %v, want %v", got[tunnel.ArgMatch], tc.want)
			}
			if s.AppProtocol != "grpc" || s.Strategy != tunnel.StrategyHTTP2Probe {
				t.Errorf("app protocol %q strategy %q, want the Service port's grpc and the configured strategy", s.AppProtocol, s.Strategy)
			}
			if tc.preview != (len(s.PreviewToken) == 32) {
				t.Errorf("preview %v but token %q", tc.preview, s.PreviewToken)
			}
			if _, err := tunnel.ParseHTTPArgs(got); err != nil {
				t.Errorf("the agent would refuse these settings: %v", err)
			}
			if tc.name == "preview token" && !s.Plaintext {
				t.Error("--http-plaintext lost")
			}
		})
	}
}

func TestPreviewURL(t *testing.T) {
	for _, tc := range []struct {
		ing  ingress
		want string
	}{
		{ingress{Host: "shop.example.com", Port: 443, TLS: true}, "https://shop.example.com/?detour-preview=tok"},
		{ingress{Host: "10.0.0.1", Port: 80}, "http://10.0.0.1/?detour-preview=tok"},
		{ingress{Host: "10.0.0.1", Port: 8080, L5: "shop.local"}, "http://shop.local:8080/?detour-preview=tok"},
		{ingress{Host: "fd00::1", Port: 8443, TLS: true}, "https://[fd00::1]:8443/?detour-preview=tok"},
	} {
		if got := previewURL(tc.ing, "tok"); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc.ing, got, tc.want)
		}
	}
}

func TestResolveIngress(t *testing.T) {
	def := ingress{Host: "web.shop", Port: 80}
	changedOf := func(names ...string) func(string) bool {
		return func(n string) bool {
			for _, x := range names {
				if x == n {
					return true
				}
			}
			return false
		}
	}
	// Flags win, and a partial set names what is missing.
	ing, err := resolveIngress(previewFlags{host: "1.2.3.4", port: 8080, tls: true}, changedOf("ingress-host", "ingress-port", "ingress-tls"), def, false, nil, nil)
	if err != nil || ing != (ingress{Host: "1.2.3.4", Port: 8080, TLS: true}) {
		t.Fatalf("flags: %+v %v", ing, err)
	}
	for _, tc := range []struct {
		changed []string
		want    string
	}{
		{[]string{"ingress-host"}, "--ingress-port missing"},
		{[]string{"ingress-tls"}, "--ingress-host and --ingress-port missing"},
		{[]string{"ingress-l5", "ingress-port"}, "--ingress-host missing"},
		{nil, "--ingress-host and --ingress-port"}, // non-interactive, nothing given
	} {
		_, err := resolveIngress(previewFlags{host: "h", port: 80}, changedOf(tc.changed...), def, false, nil, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("changed %v: err = %v, want %q", tc.changed, err, tc.want)
		}
	}
	// The dialogue: Enter takes the defaults; answers replace them; a bad
	// port is asked again.
	var out bytes.Buffer
	ing, err = resolveIngress(previewFlags{}, changedOf(), def, true, strings.NewReader("\n\n\n\n"), &out)
	if err != nil || ing != def {
		t.Fatalf("all defaults: %+v %v", ing, err)
	}
	if n := strings.Count(out.String(), "/4 "); n != 4 {
		t.Errorf("asked %d questions, want 4:\n%s", n, out.String())
	}
	ing, err = resolveIngress(previewFlags{}, changedOf(), def, true, strings.NewReader("shop.example.com\nhttps\n443\n\nwww.shop.example.com\n"), &out)
	if err != nil || ing != (ingress{Host: "shop.example.com", Port: 443, TLS: true, L5: "www.shop.example.com"}) {
		t.Fatalf("answers: %+v %v\n%s", ing, err, out.String())
	}
	if _, err := resolveIngress(previewFlags{}, changedOf(), def, true, strings.NewReader("x\n"), &out); err == nil {
		t.Fatal("input ended mid-dialogue: want an error")
	}
}
