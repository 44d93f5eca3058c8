//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/detour-dev/detour/internal/annotations"
)

// TestInterceptReplace: --replace stops the app container (its pods
// restart running the sleeper, with the agent serving the ports, and
// every request reaches the workstation); leave gives the app back (the
// pods restart with it and it answers again); and when the workstation
// goes away without a leave (the daemon killed), the webhook's restorer
// gives it back once the agents have held nothing for the grace period.
func TestInterceptReplace(t *testing.T) {
	const grace = 10 * time.Second
	ctx := context.Background()
	cs := clientset(t, restConfig(t))
	u := newUser(t)
	ns := createNamespace(ctx, t, cs, "replace")
	svc := deployWeb(ctx, t, cs, ns, "web", 2)
	url := fmt.Sprintf("http://%s:80/", svc.Spec.ClusterIP)
	isApp := func() bool { return strings.HasPrefix(who(url), "hello from web-") }
	eventually(t, time.Minute, "the app answers before any intercept", isApp)
	local := localServer(t, "workstation")
	intercept := func() {
		r := u.must("intercept", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", local), "--replace", "--replace-grace", grace.String())
		if !strings.Contains(r.stdout, "replaced:") {
			t.Errorf("the summary does not say the app is replaced:\n%s", r)
		}
		replacedPods(ctx, t, cs, ns, 2)
		if !waitForSteady(t, url, "workstation", 10, kubeProxyLag) {
			t.Fatalf("requests do not reach the workstation while replaced\n%s", agentLogs(ctx, cs, ns, "app=web"))
		}
	}
	appBack := func(what string) {
		eventually(t, 2*time.Minute, what+": the pods restart with the app", func() bool { return appPods(ctx, cs, ns, 2) })
		eventually(t, time.Minute, what+": the app answers", isApp)
	}

	intercept()
	u.must("leave", "web-"+ns)
	appBack("leave")
	if replaceAnnotated(ctx, t, cs, ns) {
		t.Error("leave left detour.dev/replace on the pod template")
	}

	intercept()
	st := u.must("status", "-o", "json")
	var status struct {
		Daemon struct {
			PID int `json:"pid"`
		} `json:"daemon"`
		Intercepts []struct {
			Replaced bool `json:"replaced"`
		} `json:"intercepts"`
	}
	if err := json.Unmarshal([]byte(st.stdout), &status); err != nil || len(status.Intercepts) != 1 || !status.Intercepts[0].Replaced {
		t.Fatalf("status -o json: %v\n%s", err, st.stdout)
	}
	if err := syscall.Kill(status.Daemon.PID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 the daemon: %v", err)
	}
	killed := time.Now()
	eventually(t, 3*time.Minute, "the restorer removes detour.dev/replace", func() bool { return !replaceAnnotated(ctx, t, cs, ns) })
	took := time.Since(killed)
	t.Logf("restored %s after the daemon was killed (grace %s, restorer interval 5 s, agents drop a silent client after ~15 s)", took.Round(time.Second), grace)
	if took < grace {
		t.Errorf("restored after %s, before the grace period %s", took, grace)
	}
	appBack("workstation gone")
}

// replacedPods waits until the workload has n ready pods, all replaced:
// the app container runs the sleeper, without its probes.
func replacedPods(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string, n int) {
	t.Helper()
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	replaced := 0
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		app := p.Spec.Containers[0]
		if !slices.Equal(app.Command, []string{annotations.Sleeper, annotations.SleepCommand}) || app.ReadinessProbe != nil ||
			p.Labels[annotations.ReplacedLabel] != annotations.ReplacedLabelValue || !podReady(&p) {
			t.Errorf("pod %s: command %v, readiness probe %v, labels %v, ready %v: want replaced", p.Name, app.Command, app.ReadinessProbe, p.Labels, podReady(&p))
			continue
		}
		replaced++
	}
	if replaced != n {
		t.Fatalf("%d replaced pods, want %d", replaced, n)
	}
}

// appPods says whether the workload runs n ready pods whose app container
// runs its own command, and no others.
func appPods(ctx context.Context, cs kubernetes.Interface, ns string, n int) bool {
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		return false
	}
	ready := 0
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || p.Labels[annotations.ReplacedLabel] != "" || len(p.Spec.Containers[0].Command) > 0 {
			return false
		}
		if podReady(&p) {
			ready++
		}
	}
	return ready == n
}

func replaceAnnotated(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string) bool {
	d, err := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, ok := d.Spec.Template.Annotations[annotations.Replace]
	return ok
}
