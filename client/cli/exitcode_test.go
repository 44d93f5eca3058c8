package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// unreachableKubeconfig is a kubeconfig whose cluster refuses at once, so
// a command that gets as far as the cluster fails at runtime (status 1).
func unreachableKubeconfig(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	const cfg = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u, namespace: default}}]
current-context: c
`
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExitStatus(t *testing.T) {
	cases := []struct {
		args []string
		want int
		msg  string // in stderr
	}{
		// The command line is wrong: 2, whoever finds it (cobra or detour).
		{[]string{"bogus"}, ExitUsage, `unknown command "bogus"`},
		{[]string{"status", "--bogus"}, ExitUsage, "unknown flag: --bogus"},
		{[]string{"intercept", "hello", "--port", "8080", "--to-pod", "x"}, ExitUsage, `invalid argument "x"`},
		{[]string{"intercept", "hello"}, ExitUsage, `required flag(s) "port"`},
		{[]string{"intercept", "--port", "8080"}, ExitUsage, "needs exactly one NAME"},
		{[]string{"leave"}, ExitUsage, "needs the intercept's"},
		{[]string{"status", "extra"}, ExitUsage, "takes no arguments"},
		{[]string{"status", "-o", "xml"}, ExitUsage, "use json or yaml"},
		{[]string{"intercept", "hello", "--port", "http"}, ExitUsage, "LOCAL must be a port"},
		{[]string{"intercept", "hello", "--port", "8080", "--to-pod", "70000"}, ExitUsage, "--to-pod 70000 is not a port"},
		{[]string{"intercept", "hello", "--port", "8080", "--mechanism", "udp"}, ExitUsage, "not supported by any known agent"},
		{[]string{"intercept", "hello", "--port", "8080", "--http-match", "x-dev"}, ExitUsage, "want NAME=VALUE"},
		{[]string{"intercept", "hello", "--port", "8080", "--preview-url"}, ExitUsage, "need --mechanism http"},
		{[]string{"intercept", "hello", "--port", "8080", "--ingress-host", "1.2.3.4"}, ExitUsage, "need --mechanism http"},
		{[]string{"intercept", "hello", "--port", "8080:http", "--http-match", "auto", "--ingress-host", "1.2.3.4"}, ExitUsage, "--ingress-port missing"},
		{[]string{"intercept", "hello", "--port", "8080", "--env-file", "x.env", "--env-syntax", "bash"}, ExitUsage, `--env-syntax "bash": use one of docker, compose`},
		{[]string{"intercept", "hello", "--port", "8080", "--env-syntax", "sh"}, ExitUsage, "give --env-file FILE too"},
		{[]string{"run", "--workload", "hello", "--expose", "0", "--", "true"}, ExitUsage, "--expose 0 is not a port"},
		{[]string{"uninstall"}, ExitUsage, "--agent WORKLOAD, or --all"},
		{[]string{"list", "-l", "tier in (web"}, ExitUsage, `-l "tier in (web" is not a label selector`},
		{[]string{"list", "-A", "-o", "xml"}, ExitUsage, "use json or yaml"},
		{[]string{"intercept", "hello", "--port", "8080", "-o", "table"}, ExitUsage, `-o "table": use json or yaml`},
		// The command line is fine; the world refuses: 1.
		{[]string{"leave", "hello"}, ExitRuntime, "daemon is not running"},
		{[]string{"intercept", "hello", "--port", "8080"}, ExitRuntime, "cannot reach the cluster"},
		{[]string{"intercept", "hello", "--port", "8080:http", "--http-match", "auto", "--preview-url=false"}, ExitRuntime, "cannot reach the cluster"},
		{[]string{"uninstall", "--agent", "hello"}, ExitRuntime, "cannot reach the cluster"},
		{[]string{"list", "-A", "-l", "team=payments"}, ExitRuntime, "cannot reach the cluster"},
		// Fine: 0.
		{[]string{"status"}, ExitOK, ""},
		{[]string{"intercept", "--help"}, ExitOK, ""},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			t.Setenv("DETOUR_HOME", t.TempDir())
			t.Setenv("XDG_CONFIG_HOME", t.TempDir())
			t.Setenv("KUBECONFIG", unreachableKubeconfig(t))
			var out, errOut bytes.Buffer
			got := Main(context.Background(), c.args, strings.NewReader(""), &out, &errOut)
			if got != c.want {
				t.Errorf("exit status %d, want %d; stderr:\n%s", got, c.want, errOut.String())
			}
			if !strings.Contains(errOut.String(), c.msg) {
				t.Errorf("stderr %q, want it to contain %q", errOut.String(), c.msg)
			}
			if c.want == ExitUsage && !strings.Contains(errOut.String(), "--help") {
				t.Errorf("a usage error should point to --help: %q", errOut.String())
			}
		})
	}
}

// TestExitStatusOfCommand: a command's own status (-- CMD) passes through
// as it is, 2 included, and nothing is printed for it; a usage error
// returned from inside RunE is still a usage error.
func TestExitStatusOfCommand(t *testing.T) {
	cases := []struct {
		err  error
		want int
		out  string
	}{
		{ExitCode(7), 7, ""},
		{ExitCode(2), 2, ""},
		{ExitCode(130), 130, ""},
		{fmt.Errorf("intercept %q: %w", "x", ExitCode(3)), 3, ""},
		{usagef("--flag: wrong"), ExitUsage, "detour: --flag: wrong\nRun 'detour sub --help' for usage.\n"},
		{fmt.Errorf("wrapped: %w", usagef("--flag: wrong (see --help)")), ExitUsage, "detour: wrapped: --flag: wrong (see --help)\n"},
		{errors.New("the cluster said no"), ExitRuntime, "detour: the cluster said no\n"},
		{nil, ExitOK, ""},
	}
	for _, c := range cases {
		root := &cobra.Command{Use: "detour", SilenceErrors: true, SilenceUsage: true}
		root.AddCommand(&cobra.Command{Use: "sub", RunE: func(*cobra.Command, []string) error { return c.err }})
		root.SetArgs([]string{"sub"})
		var errOut bytes.Buffer
		if got := execute(context.Background(), root, &errOut); got != c.want || errOut.String() != c.out {
			t.Errorf("RunE returned %v: status %d, stderr %q; want %d, %q", c.err, got, errOut.String(), c.want, c.out)
		}
	}
	if !errors.Is(usage(errors.New("x")), ErrUsage) || usage(nil) != nil {
		t.Error("usage() must mark errors as ErrUsage and keep nil")
	}
}
