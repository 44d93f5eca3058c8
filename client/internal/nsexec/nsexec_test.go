//go:build linux

package nsexec

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	if IsChild() {
		os.Exit(ChildMain())
	}
	os.Exit(m.Run())
}

// skipWithoutNamespaces skips where this machine cannot make the
// namespaces at all (the proxy fallback's tests cover those).
func startOrSkip(t *testing.T, opts Options) *Namespace {
	t.Helper()
	n, err := Start(opts)
	if errors.Is(err, ErrNoUserNamespaces) || errors.Is(err, ErrNoTUN) {
		t.Skipf("no namespaces here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

func TestCommandRunsInItsOwnNamespaces(t *testing.T) {
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2)")
	}
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	hostResolv, _ := os.ReadFile("/etc/resolv.conf")
	script := `{ ip -o addr show tun0; ip route; cat /etc/resolv.conf; echo processes=$(ls /proc | grep -c '^[0-9]'); } >` + out.Name() + ` 2>&1; exit 7`
	n := startOrSkip(t, Options{
		Command: []string{"sh", "-c", script},
		Env:     []string{"PATH=" + os.Getenv("PATH")},
		Files:   map[string][]byte{"/etc/resolv.conf": []byte("nameserver 198.18.0.2\nsearch shop.svc.cluster.local\n")},
	})
	if n.TUN == nil {
		t.Fatal("no TUN")
	}
	code, err := n.Wait()
	if err != nil || code != 7 {
		t.Fatalf("exit %d, %v", code, err)
	}
	b, _ := os.ReadFile(out.Name()) // processes: the first one, sh, the $(…) subshell, ls and grep: the PID namespace holds nothing else
	got := string(b)
	for _, want := range []string{Addr4 + "/32", "default dev tun0", "nameserver 198.18.0.2", "search shop.svc.cluster.local", "processes=5"} {
		if !strings.Contains(got, want) {
			t.Errorf("namespace output lacks %q:\n%s", want, got)
		}
	}
	after, _ := os.ReadFile("/etc/resolv.conf")
	if !bytes.Equal(hostResolv, after) {
		t.Fatal("the workstation's /etc/resolv.conf changed")
	}
	if _, err := os.Stat(n.dir); !os.IsNotExist(err) {
		t.Fatalf("private directory left behind: %v", err)
	}
}
