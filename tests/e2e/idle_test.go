//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/tests/internal/images"
)

// TestIdleAgentsGoAway: installed with --agent-max-idle 20s, agents that
// hold an intercept stay however long it lasts; once it is left, the
// webhook's idle reaper removes detour.dev/inject from the Deployment
// within max idle plus a reap interval, and the Deployment rolls to pods
// without the agent that still serve. Installing again without the option
// deletes the reaper's RBAC.
func TestIdleAgentsGoAway(t *testing.T) {
	const maxIdle = 20 * time.Second
	ctx := context.Background()
	cs := clientset(t, restConfig(t))
	u := newUser(t)
	// A leave keeps the pod's session as a spare (2 min by default), and an
	// agent with a session is busy: without one, the wait starts at leave.
	u.env = []string{"DETOUR_SESSION_LINGER=0"}
	u.must("install", "--image", images.Detour, "--agent-max-idle", maxIdle.String())
	t.Cleanup(func() {
		u.must("install", "--image", images.Detour)
		if _, err := cs.RbacV1().ClusterRoles().Get(ctx, "detour-webhook-idle", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("installing without --agent-max-idle left the idle ClusterRole: %v", err)
		}
	})
	if _, err := cs.RbacV1().ClusterRoleBindings().Get(ctx, "detour-webhook-idle", metav1.GetOptions{}); err != nil {
		t.Fatalf("the idle RBAC: %v", err)
	}

	ns := createNamespace(ctx, t, cs, "idle")
	svc := deployWeb(ctx, t, cs, ns, "web", 2)
	url := fmt.Sprintf("http://%s:80/", svc.Spec.ClusterIP)
	optedIn := func() bool {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return d.Spec.Template.Annotations[annotations.Inject] == annotations.InjectEnabled
	}

	local := localServer(t, "workstation")
	u.must("intercept", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", local))
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if hasAgent(&p) && p.Labels[annotations.IdleLabel] != annotations.IdleLabelValue {
			t.Errorf("pod %s has the agent but not the label %s", p.Name, annotations.IdleLabel)
		}
	}

	// Held for longer than max idle plus a reap interval: nothing happens.
	time.Sleep(maxIdle + 10*time.Second)
	if !optedIn() {
		t.Fatal("the reaper removed the agents of a workload with an active intercept")
	}
	if !waitForSteady(t, url, "workstation", 5, kubeProxyLag) {
		t.Fatal("the intercept stopped while held")
	}

	u.must("leave", "web-"+ns)
	left := time.Now()
	eventually(t, 2*time.Minute, "the idle reaper removes detour.dev/inject", func() bool { return !optedIn() })
	took := time.Since(left)
	t.Logf("un-annotated %s after leave (max idle %s, reap interval 5 s)", took.Round(time.Second), maxIdle)
	if took < maxIdle {
		t.Errorf("removed after %s, before max idle %s", took, maxIdle)
	}
	eventually(t, 2*time.Minute, "the Deployment rolls to 2 ready pods without the agent", func() bool {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return false
		}
		ready := 0
		for _, p := range pods.Items {
			if hasAgent(&p) || p.DeletionTimestamp != nil {
				return false
			}
			if podReady(&p) {
				ready++
			}
		}
		return ready == 2
	})
	eventually(t, time.Minute, "the app answers", func() bool { return strings.HasPrefix(who(url), "hello from web-") })
}
