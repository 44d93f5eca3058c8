package cluster

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// TestNetworkSealed builds the guard and the netns for real, checks that the
// precheck passes, that it catches a default route added inside the netns,
// and that teardown removes everything. It needs root and skips while a
// cluster is up.
func TestNetworkSealed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, bin := range []string{"ip", "nft", "nsenter"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (make deps)", bin)
		}
	}
	if exists(NetnsPath) || VerifyGuard(context.Background()) == nil {
		t.Skip("the local cluster (or its guard) is up; not touching it")
	}
	ctx := context.Background()
	log := zaptest.NewLogger(t)
	t.Cleanup(func() {
		if err := TeardownNetwork(ctx, log); err != nil {
			t.Errorf("teardown: %v", err)
		}
		if err := RemoveGuard(ctx); err != nil {
			t.Errorf("remove guard: %v", err)
		}
		if exists(NetnsPath) || linkExists(ctx, false, VethHost) {
			t.Errorf("netns or veth left behind")
		}
	})
	if err := SetupNetwork(ctx, log); err == nil {
		t.Fatal("network set up without a guard")
	}
	if err := InstallGuard(ctx, log); err != nil {
		t.Fatal(err)
	}
	if err := SetupNetwork(ctx, log); err != nil {
		t.Fatal(err)
	}
	if err := SetupNetwork(ctx, log); err != nil {
		t.Fatalf("second setup (idempotence): %v", err)
	}
	if err := Precheck(ctx); err != nil {
		t.Fatalf("precheck on a sealed netns: %v", err)
	}
	// A default route inside the netns must fail the precheck. (Nothing is
	// sent: only route lookups happen.)
	if _, err := sh(ctx, "ip", "-n", NetnsName, "route", "add", "default", "via", VethHostIP, "dev", VethNS); err != nil {
		t.Fatal(err)
	}
	if err := Precheck(ctx); !errors.Is(err, ErrUnsafe) {
		t.Fatalf("precheck with a default route: got %v, want ErrUnsafe", err)
	}
	if _, err := sh(ctx, "ip", "-n", NetnsName, "route", "del", "default"); err != nil {
		t.Fatal(err)
	}
	// An ICMP error from the cluster is not a connection the cluster
	// opens: the guard lets it in without counting it.
	sendUnreachable(t)
	time.Sleep(100 * time.Millisecond)
	if err := CheckGuardCounters(ctx, testWriter{t}); err != nil {
		t.Fatalf("guard counters: %v", err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// sendUnreachable sends, from inside the cluster's netns, an ICMP "host
// unreachable" to the host's end of the veth about a SYN the host never
// sent: what kube-proxy's reject of a Service without endpoints looks
// like when conntrack does not relate it to the host's connection.
func sendUnreachable(t *testing.T) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // the thread dies with the netns switch: never unlocked
		f, err := os.Open(NetnsPath)
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		c, err := net.ListenPacket("ip4:icmp", VethNSIP)
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		inner := make([]byte, 28) // an IPv4 header and 8 bytes of TCP
		inner[0], inner[9] = 0x45, 6
		copy(inner[12:16], net.ParseIP(VethHostIP).To4())
		copy(inner[16:20], net.ParseIP("10.215.0.10").To4())
		msg := icmp.Message{Type: ipv4.ICMPTypeDestinationUnreachable, Code: 1, Body: &icmp.DstUnreach{Data: inner}}
		b, err := msg.Marshal(nil)
		if err != nil {
			done <- err
			return
		}
		_, err = c.WriteTo(b, &net.IPAddr{IP: net.ParseIP(VethHostIP)})
		done <- err
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
