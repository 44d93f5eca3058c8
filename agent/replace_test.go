package agent

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/detour-dev/detour/internal/annotations"
)

func TestReplaceReport(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	grace := 30 * time.Second
	allow := annotations.ReplaceStartAllowance
	for _, tc := range []struct {
		name           string
		now, lastHeld  time.Time
		held, everHeld bool
		grace          time.Duration
		restore        bool
		unheld, wait   time.Duration
	}{
		{"held now", t0.Add(time.Hour), t0, true, true, grace, false, 0, grace},
		{"left just now", t0.Add(time.Hour + time.Second), t0.Add(time.Hour), false, true, grace, false, time.Second, grace},
		{"unheld for the grace", t0.Add(time.Hour + grace), t0.Add(time.Hour), false, true, grace, true, grace, grace},
		{"never held, grace over but not the allowance", t0.Add(grace), time.Time{}, false, false, grace, false, grace, allow},
		{"never held, allowance over", t0.Add(allow), time.Time{}, false, false, grace, true, allow, allow},
		{"never held, grace longer than the allowance", t0.Add(allow), time.Time{}, false, false, 2 * allow, false, allow, 2 * allow},
		{"not replaced", t0.Add(24 * time.Hour), time.Time{}, false, false, 0, false, 24 * time.Hour, allow},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := replaceReport(tc.now, t0, tc.lastHeld, tc.held, tc.everHeld, tc.grace)
			if r.Restore != tc.restore || r.Held != tc.held {
				t.Errorf("restore %v held %v, want %v %v (%+v)", r.Restore, r.Held, tc.restore, tc.held, r)
			}
			if tc.grace > 0 && (r.UnheldSeconds != tc.unheld.Seconds() || r.GraceSeconds != tc.wait.Seconds()) {
				t.Errorf("unheld %vs grace %vs, want %vs %vs", r.UnheldSeconds, r.GraceSeconds, tc.unheld.Seconds(), tc.wait.Seconds())
			}
		})
	}
}

func TestRegistryHeldState(t *testing.T) {
	r := newRegistry([]uint16{8080})
	if held, ever, _ := r.heldState(); held || ever {
		t.Fatalf("new registry: held %v ever %v", held, ever)
	}
	o := &owner{}
	if _, err := r.create(&intercept{name: "a", port: 8080, owner: o, mechanism: "tcp"}); err != nil {
		t.Fatal(err)
	}
	if held, ever, _ := r.heldState(); !held || !ever {
		t.Fatalf("after create: held %v ever %v", held, ever)
	}
	before := time.Now()
	r.removeOwner(o)
	held, ever, last := r.heldState()
	if held || !ever || last.Before(before) {
		t.Fatalf("after removal: held %v ever %v last %v (removed after %v)", held, ever, last, before)
	}
}

func TestInstallSleeper(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "detour-agent")
	if err := InstallSleeper(dst); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	want, _ := os.Stat(self)
	if fi.Mode().Perm() != 0o755 || fi.Size() != want.Size() {
		t.Errorf("installed %v %d bytes, want 0755 and %d bytes", fi.Mode().Perm(), fi.Size(), want.Size())
	}
	if err := InstallSleeper(filepath.Join(t.TempDir(), "missing", "x")); err == nil {
		t.Error("installing into a missing directory succeeded")
	}
}
