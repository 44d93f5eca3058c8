package cli

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/detour-dev/detour/tunnel"
)

// TestMirrorCommandLine: --mirror's misuses are usage errors (2), found
// before the cluster is asked anything; well-formed mirrors get as far as
// the cluster (1 here: it is unreachable).
func TestMirrorCommandLine(t *testing.T) {
	cases := []commandLine{
		{[]string{"--mirror", "--preview-url"}, ExitUsage, "--mirror takes copies and routes no request"},
		{[]string{"--mirror", "--http-match", "auto"}, ExitUsage, "a mirror copies the requests others send"},
		{[]string{"--mirror", "--http-auto-header", "baggage"}, ExitUsage, "which a mirror does not use"},
		{[]string{"--mirror", "--http-path-regex", "("}, ExitUsage, "not an RE2 regular expression"},
		{[]string{"--mechanism", "mirror"}, ExitUsage, "mirrors are asked for with --mirror"},
		{[]string{"--mechanism", "tcp-mirror"}, ExitUsage, "mirrors are asked for with --mirror"},
		{[]string{"--mirror"}, ExitRuntime, "cannot reach the cluster"},
		{[]string{"--mirror", "--mechanism", "http"}, ExitRuntime, "cannot reach the cluster"},
		{[]string{"--mirror", "--http-method", "POST", "--http-match", "x-dev=alice"}, ExitRuntime, "cannot reach the cluster"},
	}
	runCommandLines(t, []string{"intercept", "tap", "--workload", "hello", "--port", "8080"}, cases)
}

// commandLine is one command line's expected exit status and a piece of
// its stderr.
type commandLine struct {
	args []string
	want int
	msg  string
}

// runCommandLines runs prefix + each case's args against a cluster that
// cannot be reached: usage errors exit 2 before it is asked anything.
func runCommandLines(t *testing.T, prefix []string, cases []commandLine) {
	t.Helper()
	for _, c := range cases {
		args := append(slices.Clone(prefix), c.args...)
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			t.Setenv("DETOUR_HOME", t.TempDir())
			t.Setenv("XDG_CONFIG_HOME", t.TempDir())
			t.Setenv("KUBECONFIG", unreachableKubeconfig(t))
			var out, errOut bytes.Buffer
			if got := Main(context.Background(), args, strings.NewReader(""), &out, &errOut); got != c.want {
				t.Errorf("exit status %d, want %d; stderr:\n%s", got, c.want, errOut.String())
			}
			if !strings.Contains(errOut.String(), c.msg) {
				t.Errorf("stderr %q, want it to contain %q", errOut.String(), c.msg)
			}
		})
	}
}

func TestMirrorOfAndSettings(t *testing.T) {
	none := func(string) bool { return false }
	for mech, want := range map[string]string{tunnel.MechanismTCP: tunnel.MechanismTCPMirror, tunnel.MechanismHTTP: tunnel.MechanismHTTPMirror, "grpc-web": ""} {
		got, err := mirrorOf(mech, previewFlags{}, none)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("mirrorOf(%s) = %q, %v; want %q", mech, got, err, want)
		}
	}
	s, err := mirrorHTTPSettings(map[string][]string{"match": {"x-dev=alice"}, "method": {"post,get"}, "plaintext": {"true"}}, tunnel.StrategyHTTP)
	if err != nil || len(s.Match) != 1 || len(s.Methods) != 2 || !s.Plaintext || s.PreviewToken != "" || s.Strategy != tunnel.StrategyHTTP {
		t.Fatalf("settings: %+v, %v", s, err)
	}
	if _, err := tunnel.ParseHTTPMirrorArgs(s.Args()); err != nil {
		t.Fatalf("the agent refuses what the CLI sends: %v", err)
	}
}

func TestTakesOf(t *testing.T) {
	type takes struct {
		Mechanism     string
		HTTPMatch     []string
		MechanismArgs map[string][]string
	}
	ic := func(mech string, match []string, args map[string][]string) takes { return takes{mech, match, args} }
	for _, c := range []struct {
		ic   takes
		want string
	}{
		{ic(tunnel.MechanismTCP, nil, nil), "every connection"},
		{ic(tunnel.MechanismHTTP, []string{"x-dev=alice"}, nil), "requests with x-dev: alice"},
		{ic(tunnel.MechanismTCPMirror, nil, nil), "a copy of every connection"},
		{ic(tunnel.MechanismHTTPMirror, nil, nil), "a copy of every request"},
		{ic(tunnel.MechanismHTTPMirror, nil, map[string][]string{tunnel.ArgMethod: {"POST"}}), "a copy of requests method POST"},
		{ic(tunnel.MechanismHTTPMirror, []string{"x-dev=alice"}, map[string][]string{tunnel.ArgPathPrefix: {"/api/"}}), "a copy of requests with x-dev: alice; path prefix /api/"},
	} {
		if got := takesOf(c.ic.Mechanism, c.ic.HTTPMatch, c.ic.MechanismArgs); got != c.want {
			t.Errorf("%s %v %v: %q, want %q", c.ic.Mechanism, c.ic.HTTPMatch, c.ic.MechanismArgs, got, c.want)
		}
	}
}

// TestMirrorMechanismsAreBuiltIn: no extension may claim a mirror's name
// (--mirror asks the built-in agent for it); an extension's own "mirror"
// mechanism, if one declares it, is still its own.
func TestMirrorMechanismsAreBuiltIn(t *testing.T) {
	dir := t.TempDir()
	writeExt(t, dir, "bad.yml", "image: x\nmechanisms:\n  tcp-mirror: {}\n")
	if _, err := loadExtensions(dir); err == nil || !strings.Contains(err.Error(), "already provided by the built-in agent") {
		t.Fatalf("an extension claiming tcp-mirror: %v", err)
	}
	exts := []Extension{{Name: "m", Image: "img", Mechanisms: map[string]Mechanism{"mirror": {}}}}
	if m, img, err := chooseMechanism("mirror", "", nil, exts); err != nil || m != "mirror" || img != "img" {
		t.Fatalf("an extension's mirror mechanism: %q %q %v", m, img, err)
	}
}
