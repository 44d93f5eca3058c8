package cluster

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"testing"

	"go.uber.org/zap/zaptest"
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
	if err := CheckGuardCounters(ctx, testWriter{t}); err != nil {
		t.Fatalf("guard counters: %v", err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }
