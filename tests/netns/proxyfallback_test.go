package netnstest

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestClusterNetworkProxyFallback: with user namespaces disabled
// (user.max_user_namespaces=0 — set in a user namespace of the runner's
// own, see execWithoutUserNamespaces, so the machine's value never
// changes), the runner says why in one line and runs CMD directly, with a
// SOCKS5 and an HTTP proxy that have the namespace's DNS and routing: a
// program honouring ALL_PROXY or HTTPS_PROXY reaches the cluster's db:7000
// by its cluster name, from the pod's address. The probes resolve and dial
// nothing themselves, so nothing here leaves the machine.
func TestClusterNetworkProxyFallback(t *testing.T) {
	cw := startClusterWorld(t)
	openTUN(t, 0o666) // so that the user namespace is the only thing missing
	hostBefore := hostNetworkState(t) + sysctl(t, "user/max_user_namespaces")
	podIP := cw.w.PodIP.String()
	noUserNS := runOpts{noUserNS: true}
	for _, probe := range []string{"socks", "httpconnect"} {
		t.Run(probe, func(t *testing.T) {
			r := cw.runWith(t, noUserNS, fmt.Sprintf("%s db:%d", probe, peerTCPPort))
			if r.code != 0 || r.stdout != "peer="+podIP {
				t.Errorf("exit %d, %q, want peer=%s (stderr %s)", r.code, r.stdout, podIP, r.stderr)
			}
			checkFallbackLine(t, r.stderr, "user.max_user_namespaces=0")
		})
	}
	t.Run("a refused destination", func(t *testing.T) {
		r := cw.runWith(t, noUserNS, "socks 169.254.169.254:80")
		if r.code != 8 || !strings.Contains(r.stdout, "not allowed") {
			t.Errorf("exit %d, %q, want the proxy's refusal", r.code, r.stdout)
		}
	})
	t.Run("exit status passes through", func(t *testing.T) {
		if r := cw.runWith(t, noUserNS, "exit 42"); r.code != 42 {
			t.Errorf("exit %d, want 42 (%s)", r.code, r.stderr)
		}
	})
	if after := hostNetworkState(t) + sysctl(t, "user/max_user_namespaces"); after != hostBefore {
		t.Errorf("the workstation changed:\nbefore:\n%s\nafter:\n%s", hostBefore, after)
	}
	if out, _ := runOut("pgrep", "-u", "65534", "-a", "-f", cw.binary); strings.TrimSpace(out) != "" {
		t.Errorf("processes left behind:\n%s", out)
	}
}

// checkFallbackLine wants exactly one line about the fallback on stderr,
// naming the cause, the fallback, and who uses it.
func checkFallbackLine(t *testing.T, stderr, cause string) {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.Contains(l, "proxy fallback") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], cause) || !strings.Contains(lines[0], "only programs that honour ALL_PROXY/HTTP_PROXY/HTTPS_PROXY") {
		t.Errorf("want one line naming %q, the proxy fallback and who uses it; stderr:\n%s", cause, stderr)
	}
}

func sysctl(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return name + "=" + string(b)
}
