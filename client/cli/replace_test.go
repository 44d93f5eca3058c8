package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestReplaceCommandLine: --replace's misuse exits 2 before the cluster is
// asked anything; a right one gets as far as the cluster.
func TestReplaceCommandLine(t *testing.T) {
	cases := []struct {
		args []string
		want int
		msg  string
	}{
		{[]string{"--replace", "--mirror"}, ExitUsage, "use one or the other"},
		{[]string{"--replace", "--mechanism", "http"}, ExitUsage, "every connection must come to you"},
		{[]string{"--replace", "--http-match", "x-dev=alice"}, ExitUsage, "every connection must come to you"},
		{[]string{"--replace", "--mechanism", "http", "--preview-url", "--ingress-host", "h", "--ingress-port", "80"}, ExitUsage, "every connection must come to you"},
		{[]string{"--replace", "--replace-grace", "0s"}, ExitUsage, "want a positive duration"},
		{[]string{"--replace-grace", "5m"}, ExitUsage, "it needs --replace"},
		{[]string{"--replace"}, ExitRuntime, "cannot reach the cluster"},
		{[]string{"--replace", "--replace-grace", "10m", "--mechanism", "tcp"}, ExitRuntime, "cannot reach the cluster"},
	}
	for _, c := range cases {
		args := append([]string{"intercept", "worker", "--port", "8080"}, c.args...)
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
