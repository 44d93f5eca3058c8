package netnstest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestClusterNetworkRootless runs the local process's cluster network as
// it runs on a workstation: uid nobody, no capabilities, /dev/net/tun 0666
// as standard distributions ship it. The "cluster" is the world's other
// namespace: its DNS server is the pod's nameserver, its servers report
// who called.
func TestClusterNetworkRootless(t *testing.T) {
	cw := startClusterWorld(t)
	openTUN(t, 0o666)
	hostBefore := hostNetworkState(t)
	podIP, svcIP := cw.w.PodIP.String(), cw.w.ClientIP.String()

	t.Run("names resolve as in the pod", func(t *testing.T) {
		for _, name := range []string{"db", "db.shop", "db.shop.svc.cluster.local", "web-0.web", "kubernetes.default"} {
			if r := cw.run(t, "lookup "+name); r.code != 0 || r.stdout != svcIP {
				t.Errorf("lookup %s: exit %d, %q (stderr %s), want %s", name, r.code, r.stdout, r.stderr, svcIP)
			}
		}
		if r := cw.run(t, "ptr "+svcIP); r.code != 0 || r.stdout != "db.shop.svc.cluster.local." {
			t.Errorf("reverse lookup: exit %d, %q %s", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("unknown names are NXDOMAIN quickly", func(t *testing.T) {
		// The whole run's time less that of a run doing nothing: what
		// the lookup took (a resolver waiting on a silent server would
		// take 5 s or more).
		base := cw.run(t, "exit 0")
		r := cw.run(t, "lookup nope.shop.svc.cluster.local")
		if took := r.took - base.took; r.stdout != "nxdomain" || took > 1500*time.Millisecond {
			t.Errorf("got %q in %s more than an empty run (stderr %s)", r.stdout, took, r.stderr)
		}
	})
	t.Run("other names fall back to the workstation's resolvers", func(t *testing.T) {
		if r := cw.run(t, "lookup public.example.test"); r.stdout != "192.0.2.77" {
			t.Errorf("got %q (exit %d, %s)", r.stdout, r.code, r.stderr)
		}
	})
	t.Run("tcp by name and address leaves from the pod", func(t *testing.T) {
		for _, dst := range []string{fmt.Sprintf("db:%d", peerTCPPort), fmt.Sprintf("%s:%d", svcIP, peerTCPPort)} {
			if r := cw.run(t, "tcp "+dst); r.stdout != "peer="+podIP {
				t.Errorf("tcp %s: %q (exit %d, %s), want the pod's address", dst, r.stdout, r.code, r.stderr)
			}
		}
	})
	t.Run("udp leaves from the pod", func(t *testing.T) {
		if r := cw.run(t, fmt.Sprintf("udp db:%d", peerUDPPort)); r.stdout != "peer="+podIP {
			t.Errorf("udp: %q (exit %d, %s)", r.stdout, r.code, r.stderr)
		}
	})
	t.Run("256 MiB out and back", func(t *testing.T) {
		if r := cw.run(t, fmt.Sprintf("bulk db:%d %d", echoBulkPort, 256<<20)); r.code != 0 || !strings.HasPrefix(r.stdout, "sha256 equal") {
			t.Errorf("bulk: %q (exit %d, %s)", r.stdout, r.code, r.stderr)
		} else {
			t.Logf("256 MiB each way in %s", r.took)
		}
	})
	t.Run("metadata and non-cluster destinations are refused", func(t *testing.T) {
		r := cw.run(t, "tcp 169.254.169.254:80")
		if r.code != 4 || !strings.Contains(r.stdout, "connection refused") || !strings.Contains(r.stderr, "metadata") || r.took > 3*time.Second {
			t.Errorf("metadata: exit %d %q in %s, stderr %q", r.code, r.stdout, r.took, r.stderr)
		}
		// Outside the cluster's ranges, sent to the agent with
		// --also-proxy: refused, the message names the annotation. (Never
		// a workstation dial here: this machine must not send anything
		// to an address outside it.)
		r = cw.runWith(t, runOpts{alsoProxy: "10.252.0.0/16"}, "tcp 10.252.0.1:80")
		if r.code != 4 || !strings.Contains(r.stderr, "detour.dev/egress-allow") {
			t.Errorf("non-cluster: exit %d %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("exit status passes through", func(t *testing.T) {
		if r := cw.run(t, "exit 42"); r.code != 42 {
			t.Errorf("exit %d, want 42 (%s)", r.code, r.stderr)
		}
	})
	t.Run("an exposed port reaches the command", func(t *testing.T) {
		port := fmt.Sprint(freeLoopbackPort(t))
		cmd := cw.command("serve "+port, port)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Wait()
		defer func() {
			if t.Failed() {
				t.Logf("command output: %s", out.String())
			}
		}()
		var line string
		eventually(t, 10*time.Second, "the exposed port answers", func() bool {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second)
			if err != nil {
				return false
			}
			defer c.Close()
			line, _ = bufio.NewReader(c).ReadString('\n')
			return line != ""
		})
		if want := "cmd-here uid=65534 env=from-the-pod"; strings.TrimSpace(line) != want {
			t.Errorf("got %q, want %q", line, want)
		}
	})
	if after := hostNetworkState(t); after != hostBefore {
		t.Errorf("the workstation's network changed:\nbefore:\n%s\nafter:\n%s", hostBefore, after)
	}
	if left, _ := filepath.Glob(filepath.Join(os.TempDir(), "detour-ns-*")); len(left) > 0 {
		t.Errorf("namespace directories left behind: %v", left)
	}
	if out, _ := runOut("pgrep", "-u", "65534", "-a"); strings.TrimSpace(out) != "" {
		t.Errorf("processes left behind:\n%s", out)
	}
}

// TestClusterNetworkSurvivesAgentRestart: the agent crashes and comes back
// while CMD keeps opening connections. Those opened during the gap fail
// (promptly: each try is bounded), and new ones work again once the agent
// is back — the runner re-opens its session on the next dial.
func TestClusterNetworkSurvivesAgentRestart(t *testing.T) {
	cw := startClusterWorld(t)
	openTUN(t, 0o666)
	cmd := cw.command(fmt.Sprintf("loop db:%d 8s", peerTCPPort))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	began := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	killed := time.Since(began)
	cw.restartAgent(t) // a crash: SIGKILL, then a new agent
	back := time.Since(began)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("runner: %v\n%s", err, errOut.String())
	}
	t.Logf("agent killed at %s, back at %s; tries (ms since CMD's first): %s", killed.Round(time.Millisecond), back.Round(time.Millisecond), out.String())
	words := strings.Fields(out.String())
	if len(words) < 20 || !strings.HasPrefix(words[0], "ok@") {
		t.Fatalf("want ok from the start, got %q (stderr %s)", out.String(), errOut.String())
	}
	last := words[len(words)-3:]
	okAfter := 0
	for _, w := range last {
		if strings.HasPrefix(w, "ok@") {
			okAfter++
		}
	}
	if okAfter == 0 {
		t.Fatalf("no new connection worked after the agent came back: %v", last)
	}
}

// TestClusterNetworkBadInput: what a misbehaving or unlucky CMD does must
// fail cleanly and promptly — an unreachable cluster address (no route
// from the pod) is refused within moments, not hung; a flood of UDP leaves
// the path working (bounded queues drop); a CMD that forks a child and
// exits returns at once with its status, and the child goes with its
// namespace.
func TestClusterNetworkBadInput(t *testing.T) {
	cw := startClusterWorld(t)
	openTUN(t, 0o666)
	base := cw.run(t, "exit 0")
	r := cw.run(t, "tcp 10.251.200.1:80") // in the cluster's range, no route from the pod
	if took := r.took - base.took; r.code != 4 || !strings.Contains(r.stdout, "refused") || took > 2*time.Second {
		t.Errorf("unreachable: exit %d %q, %s more than an empty run", r.code, r.stdout, took)
	}
	r = cw.run(t, fmt.Sprintf("udpflood db:%d 50000", peerUDPPort))
	if r.code != 0 || r.stdout != "peer="+cw.w.PodIP.String() {
		t.Errorf("after a UDP flood: exit %d %q (stderr %s)", r.code, r.stdout, r.stderr)
	}
	cmd := cw.command("exit 0")
	cmd.Args = []string{cw.binary, "/bin/sh", "-c", "sleep 300 & echo forked; exit 3"}
	var out bytes.Buffer
	cmd.Stdout = &out
	start := time.Now()
	err := cmd.Run()
	var ee *osexec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || time.Since(start) > 10*time.Second || !strings.Contains(out.String(), "forked") {
		t.Errorf("fork and exit: %v after %s, %q", err, time.Since(start), out.String())
	}
	if left, _ := runOut("pgrep", "-u", "65534", "-f", "sleep 300"); strings.TrimSpace(left) != "" {
		t.Errorf("the forked child outlived CMD's namespace: %s", left)
	}
}

// TestClusterNetworkWithoutTUN: /dev/net/tun 0600 (root only, as on this
// machine) — the runner says why, and what to do, in one line, and the
// proxy fallback takes over (proxyfallback_test.go).
func TestClusterNetworkWithoutTUN(t *testing.T) {
	cw := startClusterWorld(t)
	openTUN(t, 0o600)
	r := cw.run(t, fmt.Sprintf("socks db:%d", peerTCPPort))
	if r.code != 0 || r.stdout != "peer="+cw.w.PodIP.String() || !strings.Contains(r.stderr, "chmod 0666") {
		t.Fatalf("exit %d, %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	checkFallbackLine(t, r.stderr, "/dev/net/tun")
}

func freeLoopbackPort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// hostNetworkState is what must not change on the workstation: routes,
// resolv.conf, firewall rules.
func hostNetworkState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, c := range [][]string{{"ip", "route", "show", "table", "all"}, {"ip", "-6", "route", "show", "table", "all"}, {"nft", "-s", "list", "ruleset"}} {
		out, err := runOut(c[0], c[1:]...)
		if err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		b.WriteString(out)
	}
	resolv, _ := os.ReadFile("/etc/resolv.conf")
	b.Write(resolv)
	return b.String()
}

func runOut(name string, args ...string) (string, error) {
	out, err := osexec.Command(name, args...).CombinedOutput()
	return string(out), err
}
