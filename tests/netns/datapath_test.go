package netnstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/tests/internal/nsworld"
	"github.com/detour-dev/detour/tunnel"
	"github.com/google/nftables"
	"github.com/vishvananda/netns"
)

// TestRedirectMode walks the whole life of an intercept with the nftables
// redirect really applied in the pod's namespace.
func TestRedirectMode(t *testing.T) {
	p := startPod(t, podOptions{redirect: true})
	laptop := serveHTTP(t, "", "127.0.0.1:0", "workstation").Addr().String()
	ctx := context.Background()

	t.Run("no intercept: the app answers", func(t *testing.T) {
		if got := p.get(appHTTP); got != "app" {
			t.Fatalf("got %q, want app", got)
		}
	})

	t.Run("tunnel port is not reachable from the cluster", func(t *testing.T) {
		c, err := nsworld.Dial(ctx, p.w.Client, fmt.Sprintf("%s:%d", p.w.PodIP, tunnelPort))
		if err == nil {
			c.Close()
			t.Fatalf("cluster client connected to the agent's tunnel port at %s:%d", p.w.PodIP, tunnelPort)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial error %v, want connection refused", err)
		}
	})

	t.Run("redirect port refuses connections that were not redirected", func(t *testing.T) {
		c, err := nsworld.Dial(ctx, p.w.Client, fmt.Sprintf("%s:%d", p.w.PodIP, agentPort))
		if err != nil {
			return // refused outright is fine too
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		if n > 0 {
			t.Fatalf("direct connection to the redirect port was relayed: %q", buf[:n])
		}
	})

	alice := p.session(t, "alice@laptop", tunnel.Config{})
	t.Run("tcp intercept: the workstation answers", func(t *testing.T) {
		if _, err := alice.CreateIntercept(ctx, client.InterceptSpec{Name: "hello", Port: appHTTP, LocalAddr: laptop}); err != nil {
			t.Fatal(err)
		}
		if got := p.get(appHTTP); got != "workstation" {
			t.Fatalf("got %q, want workstation", got)
		}
		if got := p.get(directHTTP); got != "app" {
			t.Fatalf("a port not intercepted changed hands: %q", got)
		}
	})

	t.Run("a second global intercept is refused naming the holder", func(t *testing.T) {
		bob := p.session(t, "bob@desk", tunnel.Config{})
		_, err := bob.CreateIntercept(ctx, client.InterceptSpec{Name: "bobs", Port: appHTTP, LocalAddr: laptop})
		if !errors.Is(err, tunnel.ErrAlreadyIntercepted) || !strings.Contains(err.Error(), "alice@laptop") {
			t.Fatalf("err = %v, want already intercepted by alice@laptop", err)
		}
	})

	t.Run("leave: the app answers again within 1s", func(t *testing.T) {
		if _, err := alice.RemoveIntercept(ctx, "hello"); err != nil {
			t.Fatal(err)
		}
		d := eventually(t, time.Second, "app answers after leave", func() bool { return p.get(appHTTP) == "app" })
		t.Logf("app answered %s after leave", d.Round(time.Millisecond))
	})

	t.Run("client killed without goodbye: the app answers again within 1s", func(t *testing.T) {
		helper := startHelperClient(t, p, appHTTP, laptop)
		if got := p.get(appHTTP); got != "workstation" {
			t.Fatalf("helper's intercept not active: %q", got)
		}
		helper.Process.Kill() // SIGKILL: no goodbye
		helper.Wait()
		d := eventually(t, time.Second, "app answers after the client was killed", func() bool { return p.get(appHTTP) == "app" })
		t.Logf("app answered %s after kill -9", d.Round(time.Millisecond))
	})

	t.Run("local target down: connection closed promptly, session survives", func(t *testing.T) {
		dead := listen(t, "", "127.0.0.1:0")
		deadAddr := dead.Addr().String()
		dead.Close()
		if _, err := alice.CreateIntercept(ctx, client.InterceptSpec{Name: "hello", Port: appHTTP, LocalAddr: deadAddr}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if got := p.get(appHTTP); !strings.HasPrefix(got, "error") {
			t.Fatalf("got %q, want the connection closed", got)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("closing took %s", d)
		}
		if _, err := alice.Ping(ctx); err != nil {
			t.Fatalf("session died: %v", err)
		}
		if _, err := alice.RemoveIntercept(ctx, "hello"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("re-running init does not duplicate rules", func(t *testing.T) {
		for i := 0; i < 2; i++ {
			if out, err := nsworld.Command(ctx, p.w.Pod, agentBinary, "init", "--ports", fmt.Sprintf("%d,%d", appHTTP, appBulk), "--agent-port", fmt.Sprint(agentPort)).CombinedOutput(); err != nil {
				t.Fatalf("init again: %v\n%s", err, out)
			}
		}
		for family, want := range map[nftables.TableFamily]int{nftables.TableFamilyIPv4: 1, nftables.TableFamilyIPv6: 1} {
			if got := countRules(t, p.w.Pod, family); got != want {
				t.Fatalf("family %d: %d detour rules after three inits, want %d", family, got, want)
			}
		}
		if got := p.get(appHTTP); got != "app" {
			t.Fatalf("after re-init: %q", got)
		}
	})

	t.Run("init dry-run changes nothing and prints the plan", func(t *testing.T) {
		out, err := nsworld.Command(ctx, p.w.Pod, agentBinary, "init", "--ports", "7777", "--dry-run").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "tcp dport { 7777 } redirect to :15001") {
			t.Fatalf("dry-run: %v\n%s", err, out)
		}
		if got := p.get(appHTTP); got != "app" {
			t.Fatalf("dry-run changed the rules: %q", got)
		}
	})
}

// countRules lists the rules of detour's prerouting chain in namespace ns.
func countRules(t *testing.T, ns string, family nftables.TableFamily) int {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	conn, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		t.Fatal(err)
	}
	table := &nftables.Table{Name: "detour", Family: family}
	rules, err := conn.GetRules(table, &nftables.Chain{Name: "prerouting", Table: table})
	if err != nil {
		t.Fatalf("list rules: %v", err)
	}
	return len(rules)
}

// TestPortRenameMode: no nftables, no privileges; the agent listens on the
// port the Service now targets and forwards to the app's port.
func TestPortRenameMode(t *testing.T) {
	p := startPod(t, podOptions{redirect: false})
	if got := countRules(t, p.w.Pod, nftables.TableFamilyIPv4); got != 0 {
		t.Fatalf("port-rename mode has %d nftables rules", got)
	}
	laptop := serveHTTP(t, "", "127.0.0.1:0", "workstation").Addr().String()
	if got := p.get(18080); got != "app" {
		t.Fatalf("no intercept: %q", got)
	}
	if got := p.get(appHTTP); got != "app" {
		t.Fatalf("the app's own port should still reach the app: %q", got)
	}
	s := p.session(t, "alice@laptop", tunnel.Config{})
	if _, err := s.CreateIntercept(context.Background(), client.InterceptSpec{Name: "hello", Port: appHTTP, LocalAddr: laptop}); err != nil {
		t.Fatal(err)
	}
	if got := p.get(18080); got != "workstation" {
		t.Fatalf("intercepted: %q", got)
	}
	s.Close()
	eventually(t, time.Second, "app after the session closed", func() bool { return p.get(18080) == "app" })
}

// TestInitNeedsNetAdmin: without CAP_NET_ADMIN init fails with a message
// that says what is missing, rather than half-applying.
func TestInitNeedsNetAdmin(t *testing.T) {
	requireWorld(t)
	if _, err := exec.LookPath("capsh"); err != nil {
		t.Skip("capsh not installed")
	}
	w, err := nsworld.New()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	out, err := nsworld.Command(context.Background(), w.Pod, "capsh", "--drop=cap_net_admin", "--", "-c",
		agentBinary+" init --ports 8080").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "CAP_NET_ADMIN") {
		t.Fatalf("init without NET_ADMIN: err=%v\n%s", err, out)
	}
}

var _ = net.Dial
