//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/tests/internal/images"
)

// TestReinterceptUsesTheSpareSession: a leave keeps the pod's session as a
// spare (DETOUR_SESSION_LINGER, 2 min by default), and the next intercept
// of that pod is created on it: the agent sees no session end and no new
// one, traffic goes to the workstation and back to the app at each leave
// as before. A spare closes when its time is up, and at detour quit.
func TestReinterceptUsesTheSpareSession(t *testing.T) {
	ctx := context.Background()
	cfg := restConfig(t)
	cs := clientset(t, cfg)
	alice := newUser(t)
	alice.must("install", "--image", images.Detour)
	ns := createNamespace(ctx, t, cs, "spare")
	svc := deployWeb(ctx, t, cs, ns, "web", 1)
	url := fmt.Sprintf("http://%s:80/", svc.Spec.ClusterIP)
	local := localServer(t, "workstation")
	name := "web-" + ns
	intercept := func(u *user) {
		t.Helper()
		u.must("intercept", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", local))
		eventually(t, 10*time.Second, "requests at the workstation", func() bool { return who(url) == "workstation" })
	}
	leave := func(u *user) {
		t.Helper()
		u.must("leave", name)
		eventually(t, 10*time.Second, "the app answers after leave", func() bool { return strings.HasPrefix(who(url), "hello from") })
	}
	intercept(alice) // injects the agent
	pod := livePod(ctx, t, cs, ns, "app=web")
	metrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", portForward(ctx, t, cfg, cs, &pod, annotations.MetricsPort)[0])
	sessions := func() (active, ended, reconnects float64) {
		t.Helper()
		var err [3]error
		active, err[0] = scrape(ctx, metrics, "detour_agent_sessions_active")
		ended, err[1] = scrape(ctx, metrics, `detour_agent_session_ends_total{reason="client_closed"}`)
		reconnects, err[2] = scrape(ctx, metrics, "detour_agent_session_reconnects_total")
		for _, e := range err {
			if e != nil {
				t.Fatalf("agent metrics: %v", e)
			}
		}
		return active, ended, reconnects
	}
	active0, ended0, reconn0 := sessions()
	if active0 != 1 {
		t.Fatalf("%v sessions at the agent with one intercept, want 1", active0)
	}
	for i := 0; i < 3; i++ {
		leave(alice)
		if active, ended, _ := sessions(); active != 1 || ended != ended0 {
			t.Fatalf("after leave %d: %v sessions, %v closed (before: %v); want the spare kept", i+1, active, ended, ended0)
		}
		intercept(alice)
	}
	if active, ended, reconn := sessions(); active != 1 || ended != ended0 || reconn != reconn0 {
		t.Errorf("three re-intercepts: %v sessions, %v closed, %v reconnects (before: 1, %v, %v); want them on the spare", active, ended, reconn, ended0, reconn0)
	}
	leave(alice)
	alice.must("quit")
	eventually(t, 10*time.Second, "the spare closed at quit", func() bool { a, _, _ := sessions(); return a == 0 })

	bob := newUser(t)
	bob.env = []string{"DETOUR_SESSION_LINGER=2s"}
	intercept(bob)
	leave(bob)
	left := time.Now()
	eventually(t, 15*time.Second, "the spare closed after its 2 s", func() bool { a, _, _ := sessions(); return a == 0 })
	if took := time.Since(left); took < time.Second {
		t.Errorf("the spare closed %s after leave, want about 2 s", took)
	}
}
