package cli

import "testing"

// TestReplaceCommandLine: --replace's misuse exits 2 before the cluster is
// asked anything; a right one gets as far as the cluster.
func TestReplaceCommandLine(t *testing.T) {
	cases := []commandLine{
		{[]string{"--replace", "--mirror"}, ExitUsage, "use one or the other"},
		{[]string{"--replace", "--mechanism", "http"}, ExitUsage, "every connection must come to you"},
		{[]string{"--replace", "--http-match", "x-dev=alice"}, ExitUsage, "every connection must come to you"},
		{[]string{"--replace", "--mechanism", "http", "--preview-url", "--ingress-host", "h", "--ingress-port", "80"}, ExitUsage, "every connection must come to you"},
		{[]string{"--replace", "--replace-grace", "0s"}, ExitUsage, "want a positive duration"},
		{[]string{"--replace-grace", "5m"}, ExitUsage, "it needs --replace"},
		{[]string{"--replace"}, ExitRuntime, "cannot reach the cluster"},
		{[]string{"--replace", "--replace-grace", "10m", "--mechanism", "tcp"}, ExitRuntime, "cannot reach the cluster"},
	}
	runCommandLines(t, []string{"intercept", "worker", "--port", "8080"}, cases)
}
