//go:build linux

package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/detour-dev/detour/client/internal/nsexec"
)

func TestMain(m *testing.M) {
	if nsexec.IsChild() {
		os.Exit(nsexec.ChildMain())
	}
	os.Exit(m.Run())
}

// TestRefreshTreesReachesTheRunningCommand: the refresh loop reads the
// pod's files again on its tick and the running command sees the new
// token at the same path; a failed read is said once, not per tick.
func TestRefreshTreesReachesTheRunningCommand(t *testing.T) {
	if _, err := os.Stat("/etc/detour-refresh"); err == nil {
		t.Skip("/etc/detour-refresh exists on this machine")
	}
	out := filepath.Join(t.TempDir(), "out")
	tree := func(v string) []nsexec.Tree {
		return []nsexec.Tree{{Target: "/etc/detour-refresh", Files: map[string]nsexec.TreeFile{"token": {Data: []byte(v), Mode: 0o600}}}}
	}
	script := `i=0; while [ "$(cat /etc/detour-refresh/token)" != "v3" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; cat /etc/detour-refresh/token > ` + out
	ns, err := nsexec.Start(nsexec.Options{Command: []string{"sh", "-c", script}, Env: []string{"PATH=" + os.Getenv("PATH")}, Trees: tree("v1")})
	if errors.Is(err, nsexec.ErrNoUserNamespaces) || errors.Is(err, nsexec.ErrNoTUN) {
		t.Skipf("no namespaces here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	var calls atomic.Int32
	var stderr strings.Builder
	r := ClusterRun{RefreshEvery: 20 * time.Millisecond, Stderr: &stderr, Refresh: func(context.Context) ([]nsexec.Tree, error) {
		switch n := calls.Add(1); {
		case n <= 3:
			return nil, fmt.Errorf("apiserver unreachable")
		default:
			return tree(fmt.Sprintf("v%d", min(n-2, 3))), nil
		}
	}}
	done := make(chan struct{})
	go func() { refreshTrees(context.Background(), ns, r); close(done) }()
	if code, err := ns.Wait(); code != 0 || err != nil {
		t.Fatalf("exit %d, %v", code, err)
	}
	<-done
	// Ticks racing the command's exit stage nothing once it has ended:
	// no copy of the files is left behind (they were, before).
	if left, _ := filepath.Glob(filepath.Join(os.TempDir(), "detour-ns-*", "update-*")); len(left) > 0 {
		t.Errorf("staged copies left behind: %v", left)
	}
	if b, _ := os.ReadFile(out); string(b) != "v3" {
		t.Fatalf("the command saw %q, want v3", b)
	}
	if n := strings.Count(stderr.String(), "refreshing the pod's files"); n != 1 {
		t.Fatalf("a failure streak was reported %d times, want once: %q", n, stderr.String())
	}
}

// TestNextRefresh: after a failure the refresh is tried again soon, not a
// whole interval later (48 min for an hour's token: it would expire).
func TestNextRefresh(t *testing.T) {
	for _, c := range []struct {
		every  time.Duration
		failed bool
		want   time.Duration
	}{
		{48 * time.Minute, false, 48 * time.Minute},
		{48 * time.Minute, true, refreshRetry},
		{5 * time.Second, true, 5 * time.Second},
	} {
		if got := nextRefresh(c.every, c.failed); got != c.want {
			t.Errorf("nextRefresh(%s, %v) = %s, want %s", c.every, c.failed, got, c.want)
		}
	}
}
