//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/detour-dev/detour/tests/internal/images"
)

// TestFirstRequestAfterInjection (issue 14 §5): on a workload the agent was
// never injected into, the first request to the Service right after
// `detour intercept` says it is active reaches the workstation; none hangs.
func TestFirstRequestAfterInjection(t *testing.T) {
	ctx := context.Background()
	cs := clientset(t, restConfig(t))
	u := newUser(t)
	u.must("install", "--image", images.Detour)
	ns := createNamespace(ctx, t, cs, "first")
	local := localServer(t, "workstation")
	const runs = 4
	svcs := make([]string, runs)
	for i := range svcs {
		svc := deployWeb(ctx, t, cs, ns, fmt.Sprintf("web%d", i), 1)
		svcs[i] = fmt.Sprintf("http://%s:80/", svc.Spec.ClusterIP)
	}
	for i, url := range svcs {
		eventually(t, 60*time.Second, "app answers", func() bool { return strings.HasPrefix(who(url), "hello from") })
		start := time.Now()
		u.must("intercept", fmt.Sprintf("web%d", i), "-n", ns, "--port", fmt.Sprintf("%d:http", local))
		took := time.Since(start)
		// Several requests, each on a new connection, each allowed 2 s.
		for j := 0; j < 5; j++ {
			if got := askWithin(2*time.Second, http.MethodGet, url); got != "workstation" {
				t.Errorf("run %d, request %d right after intercept (%s, annotate → active): %q", i, j, took.Round(time.Millisecond), got)
			}
		}
		t.Logf("run %d: annotate → active %s", i, took.Round(time.Millisecond))
		u.must("leave", fmt.Sprintf("web%d-%s", i, ns))
	}
}
