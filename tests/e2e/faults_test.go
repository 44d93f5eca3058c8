//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/detour-dev/detour/client/install"
	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/tests/internal/cluster"
	"github.com/detour-dev/detour/tests/internal/images"
)

// TestFaults breaks things under an active tcp intercept of a 2-replica
// Deployment and asserts that detour recovers from each (issue 7, item 2):
// the daemon killed (the agents fail open; a new daemon holds nothing
// stale), the port-forward connections cut under the daemon (it reconnects
// and says so in status), the agent container killed (the kubelet restarts
// it and the daemon re-creates the intercept), the workload scaled 2→3→1,
// the webhook scaled to zero during a rollout (the pods come up without the
// agent, the app keeps answering; back with the webhook), and the apiserver
// restarted (the daemon reconnects once it is back).
//
// Each subtest starts from the same point (f.ready: 2 pods with agents, the
// intercept active on both, traffic at the workstation) and restores what it
// broke, even when it fails: the webhook's replicas, the apiserver.
func TestFaults(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cfg := restConfig(t)
	cs := clientset(t, cfg)
	u := newUser(t)
	u.must("install", "--image", images.Detour)

	ns := createNamespace(ctx, t, cs, "faults")
	svc := deployWeb(ctx, t, cs, ns, "web", 2)
	f := &fltFixture{t: t, ctx: ctx, cfg: cfg, cs: cs, u: u, ns: ns, name: "web-" + ns,
		url: fmt.Sprintf("http://%s:80/", svc.Spec.ClusterIP)}
	eventually(t, time.Minute, "the Service answers before any intercept", func() bool { return fltIsApp(who(f.url)) })
	f.local = localServer(t, "workstation")
	f.intercept(t)
	if !waitForSteady(t, f.url, "workstation", 20, kubeProxyLag) {
		t.Fatalf("%s", agentLogs(ctx, cs, ns, "app=web"))
	}

	t.Run("DaemonKilled", func(t *testing.T) {
		f.ready(t)
		u := f.user(t)
		st := f.status(t)
		old := st.Daemon.PID
		fltMustBeExe(t, old, u.bin)
		probe := fltStartProbe(f.url)
		killed := time.Now()
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 daemon %d: %v", old, err)
		}
		// The daemon's sockets close with it: the port-forwards end, the
		// agents see their sessions closed and give the traffic back. The
		// bound is the agents' keep-alive (5 s) and write timeout (10 s),
		// for a daemon that vanished without a word; with margin.
		steady := fltSteady(t, f.url, "the app", fltIsApp, 20, killed, 30*time.Second)
		answers := probe.finish()
		t.Logf("daemon %d killed: first answer from the app %s after the kill, 20 in a row from %s; meanwhile %s",
			old, fltSince(answers, killed, fltIsApp), steady, fltSummary(answers))
		if n := fltCount(answers, killed.Add(steady), fltIsWorkstation); n > 0 {
			t.Errorf("%d answers from the workstation after the traffic had come back to the app", n)
		}

		st = f.status(t)
		if st.Daemon != nil || len(st.Intercepts) != 0 {
			t.Fatalf("status after kill -9: daemon %+v, intercepts %+v; want no daemon and no intercepts", st.Daemon, st.Intercepts)
		}
		// Only `detour intercept` starts the daemon on demand; start it
		// the way it does (the hidden `detour daemon`, its own session).
		pid := fltStartDaemon(t, f.t, u)
		st = f.status(t)
		if st.Daemon == nil || st.Daemon.PID != pid || pid == old {
			t.Fatalf("status names daemon %+v, want the new one (pid %d; the killed one was %d)", st.Daemon, pid, old)
		}
		if len(st.Intercepts) != 0 {
			t.Fatalf("the new daemon holds %+v; want nothing", st.Intercepts)
		}
		fltAlways(t, f.url, "the app", fltIsApp, 3*time.Second)
		// No agent kept the dead daemon's intercept: the new one's would be
		// refused ("already intercepted") otherwise.
		start := time.Now()
		f.intercept(t)
		f.waitHeld(t, 2, 30*time.Second)
		t.Logf("re-intercepted from the new daemon in %s", time.Since(start).Round(time.Millisecond))
		fltSteady(t, f.url, "the workstation", fltIsWorkstation, 20, time.Now(), kubeProxyLag)
	})

	t.Run("PortForwardCut", func(t *testing.T) {
		f.ready(t)
		st := f.status(t)
		before := st.intercept(f.name).reconnects()
		pid := st.Daemon.PID
		host, port := fltAPIServerAddr(t, f.cfg)
		api, forwards := f.splitDaemonConns(t, pid, host, port)
		t.Logf("daemon %d: API connection %s; port-forwards %v", pid, api, forwards)
		if len(forwards) != len(before) {
			t.Fatalf("daemon %d: %d port-forward connections for %d pods", pid, len(forwards), len(before))
		}
		probe := fltStartProbe(f.url)
		cut := time.Now()
		fltKillConns(t, host, port, forwards)
		held := f.waitReconnected(t, before, cut, 30*time.Second)
		steady := fltSteady(t, f.url, "the workstation", fltIsWorkstation, 20, cut, kubeProxyLag)
		answers := probe.finish()
		t.Logf("port-forwards cut: every pod active again %s after, 20 answers in a row from the workstation from %s; meanwhile %s",
			held, steady, fltSummary(answers))
		after := fltDaemonConns(t, pid, host, port)
		if !fltHasConn(after, api.local) {
			t.Errorf("the daemon's API connection %s is gone (now %v): more than the port-forwards was cut", api, after)
		}
		for _, p := range f.status(t).intercept(f.name).Pods {
			t.Logf("status: pod %s %s, reconnects %d, lastError %q", p.Pod, p.State, p.Reconnects, p.LastError)
			if p.LastError == "" {
				t.Errorf("pod %s: status shows no lastError after its port-forward was cut", p.Pod)
			}
		}
	})

	t.Run("AgentRestarted", func(t *testing.T) {
		f.ready(t)
		pods := fltAgentPods(t, f)
		victim := pods[0]
		other := pods[1]
		id, restarts := fltAgentContainer(t, f, victim)
		otherBefore := fltPodState(f.status(t).intercept(f.name), other)
		probe := fltStartProbe(f.url)
		killed := time.Now()
		out, err := exec.Command("ctr", "--address", cluster.DefaultConfig().ContainerdSocket(), "--namespace", "k8s.io",
			"task", "kill", "--signal", "SIGKILL", id).CombinedOutput()
		if err != nil {
			t.Fatalf("ctr task kill %s: %v\n%s", id, err, out)
		}
		var restartedIn time.Duration
		fltWait(t, time.Minute, "the kubelet restarts the agent container of "+victim, func() bool {
			nid, n := fltAgentContainer(t, f, victim)
			if n == restarts+1 && nid != id && fltAgentReady(t, f, victim) {
				restartedIn = time.Since(killed)
				return true
			}
			return n > restarts+1 // a second restart would be a crash loop: fail below
		})
		if _, n := fltAgentContainer(t, f, victim); n != restarts+1 {
			t.Fatalf("agent of %s restarted %d times, want %d", victim, n, restarts+1)
		}
		f.waitHeld(t, 2, 30*time.Second)
		held := time.Since(killed).Round(time.Millisecond)
		steady := fltSteady(t, f.url, "the workstation", fltIsWorkstation, 20, killed, kubeProxyLag)
		answers := probe.finish()
		t.Logf("agent of %s killed: restarted (restartCount %d) and ready %s after, intercept active on it again %s after, traffic steadily at the workstation from %s; meanwhile %s",
			victim, restarts+1, restartedIn.Round(time.Millisecond), held, steady, fltSummary(answers))
		if now := fltPodState(f.status(t).intercept(f.name), other); now.Reconnects != otherBefore.Reconnects || now.State != "active" {
			t.Errorf("pod %s, whose agent was not touched: %+v, before %+v", other, now, otherBefore)
		}
	})

	t.Run("Scale", func(t *testing.T) {
		f.ready(t)
		f.scale(t, 3)
		held := f.waitHeld(t, 3, 2*time.Minute)
		t.Logf("scaled 2→3: the new pod intercepted %s after the scale", held)
		fltSteady(t, f.url, "the workstation", fltIsWorkstation, 30, time.Now(), kubeProxyLag)
		if pods := activePods(t, f.user(t), f.name); len(pods) != 3 {
			t.Fatalf("active pods %v, want 3", pods)
		}

		probe := fltStartProbe(f.url)
		down := time.Now()
		f.scale(t, 1)
		held = f.waitHeld(t, 1, 2*time.Minute)
		ic := f.status(t).intercept(f.name)
		t.Logf("scaled 3→1: status down to one active pod %s after the scale: %+v", held, ic.Pods)
		if len(ic.Pods) != 1 || ic.Pods[0].State != "active" || (ic.State != "" && ic.State != "active") {
			t.Fatalf("status after 3→1: intercept %s, pods %+v; want one active pod", ic.State, ic.Pods)
		}
		steady := fltSteady(t, f.url, "the workstation", fltIsWorkstation, 20, down, kubeProxyLag)
		answers := probe.finish()
		t.Logf("3→1: traffic steadily at the workstation from %s after the scale; meanwhile %s", steady, fltSummary(answers))
		if n := fltCount(answers, down, fltIsApp); n > 0 {
			// A terminating pod keeps its session until its agent ends it,
			// so the connections kube-proxy still sends it reach the
			// workstation: none may reach the removed pods' apps.
			t.Errorf("%d answers from the app while scaling down (the removed pods' last connections)", n)
		}
		fltAlways(t, f.url, "the workstation", fltIsWorkstation, 3*time.Second)
	})

	t.Run("WebhookDownDuringRollout", func(t *testing.T) {
		f.ready(t)
		u := f.user(t)
		d, err := f.cs.AppsV1().Deployments(install.Namespace).Get(ctx, install.WebhookDeployment, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("webhook deployment: %v", err)
		}
		orig := *d.Spec.Replicas
		t.Cleanup(func() {
			cctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			if err := fltScaleWebhook(cctx, f.cs, orig); err != nil {
				t.Errorf("restore the webhook to %d replicas: %v", orig, err)
			}
		})
		if err := fltScaleWebhook(ctx, f.cs, 0); err != nil {
			t.Fatal(err)
		}
		down := time.Now()
		probe := fltStartProbe(f.url)
		f.roll(t)
		pods, err := f.cs.CoreV1().Pods(f.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && hasAgent(&p) {
				t.Fatalf("pod %s got the agent with the webhook scaled to zero", p.Name)
			}
		}
		steady := fltSteady(t, f.url, "the app", fltIsApp, 20, down, kubeProxyLag)
		answers := probe.finish()
		t.Logf("rollout with the webhook down: pods without the agent, the app answering steadily from %s; meanwhile %s", steady, fltSummary(answers))
		if gap := fltLongestFailure(answers); gap > 2*time.Second {
			t.Errorf("the Service failed for %s in a row during the rollout", gap.Round(time.Millisecond))
		}

		// What the user sees: the intercept holds no pod.
		st := f.status(t)
		ic := st.intercept(f.name)
		if ic == nil {
			t.Fatalf("status lost the intercept: %+v", st)
		}
		for _, p := range ic.Pods {
			if p.State == "active" {
				t.Errorf("status shows pod %s active; no pod has an agent", p.Pod)
			}
		}
		if ic.State == "active" {
			t.Errorf("status says the intercept is active while no pod has an agent")
		}
		var table string
		eventually(t, 15*time.Second, "status lists the pods that run without the agent", func() bool {
			table = u.must("status").stdout
			return strings.Contains(table, "no-agent")
		})
		t.Logf("detour status with no agent on any pod (intercept state %q, %d pods listed):\n%s", ic.State, len(ic.Pods), table)
		var list []fltListEntry
		if err := json.Unmarshal([]byte(u.must("list", "-n", f.ns, "-o", "json").stdout), &list); err != nil {
			t.Fatal(err)
		}
		for _, e := range list {
			if e.Workload == "deployment/web" {
				t.Logf("detour list: %s agent opt-in %v, %d of %d pods with a ready agent", e.Workload, e.AgentOptIn, e.AgentPods, e.Pods)
				if !e.AgentOptIn || e.AgentPods != 0 || e.Pods != 2 {
					t.Errorf("detour list: %+v; want opt-in, 0 of 2 pods with an agent", e)
				}
			}
		}
		if !strings.Contains(table, "0/") {
			t.Errorf("detour status does not show that no pod is held:\n%s", table)
		}
		if !strings.Contains(table, "no-agent") || !strings.Contains(table, "created without the detour agent") || !strings.Contains(table, "(degraded)") {
			t.Errorf("detour status does not say that the workload's pods run without the agent:\n%s", table)
		}

		// The webhook back, a new rollout brings the agent back, and the
		// daemon takes the new pods without being asked.
		if err := fltScaleWebhook(ctx, f.cs, orig); err != nil {
			t.Fatal(err)
		}
		back := time.Now()
		f.roll(t)
		held := f.waitHeld(t, 2, time.Minute)
		steady = fltSteady(t, f.url, "the workstation", fltIsWorkstation, 20, back, kubeProxyLag)
		t.Logf("webhook back (%d replicas): rolled; intercept active on both new pods %s after the rollout completed, traffic at the workstation %s after the webhook was ready", orig, held, steady)
	})

	t.Run("APIServerRestarted", func(t *testing.T) {
		f.ready(t)
		pid, ok := fltAPIServerPID()
		if !ok {
			t.Fatalf("no running kube-apiserver in %s", fltAPIServerPIDFile())
		}
		spec, err := fltReadProc(pid)
		if err != nil {
			t.Fatal(err)
		}
		// Whatever happens below, the apiserver runs again at the end:
		// other tests share the cluster.
		t.Cleanup(func() {
			if _, ok := fltAPIServerPID(); ok {
				return
			}
			cctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			if _, err := fltStartAPIServer(cctx, spec); err != nil {
				t.Errorf("restart kube-apiserver: %v", err)
				return
			}
			if err := fltWaitAPIServer(cctx, f.cs, 2*time.Minute); err != nil {
				t.Errorf("kube-apiserver not ready again: %v", err)
			}
		})
		before := f.status(t).intercept(f.name).reconnects()
		probe := fltStartProbe(f.url)
		stopped := time.Now()
		// SIGTERM, then SIGKILL: it stops listening at once but waits for
		// long-running requests (everyone's port-forwards) to end; the
		// cluster is shared, so it does not get long.
		if err := fltStopProcess(pid, spec.exe, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		gone := time.Since(stopped)
		newPID, err := fltStartAPIServer(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		if err := fltWaitAPIServer(ctx, f.cs, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		ready := time.Now()
		t.Logf("kube-apiserver %d stopped in %s, restarted as %d, ready %s after the stop", pid, gone.Round(time.Millisecond), newPID, ready.Sub(stopped).Round(time.Millisecond))
		held := f.waitReconnected(t, before, ready, time.Minute)
		steady := fltSteady(t, f.url, "the workstation", fltIsWorkstation, 20, ready, time.Minute)
		answers := probe.finish()
		t.Logf("after the apiserver was ready: every pod active again %s, traffic steadily at the workstation from %s; since the stop: %s",
			held, steady, fltSummary(answers))
		// The rest of the cluster came through: every component healthy,
		// the node Ready (tests/cluster status).
		var report strings.Builder
		fltWait(t, time.Minute, "the cluster healthy after the apiserver restart", func() bool {
			report.Reset()
			ok, err := cluster.Status(ctx, &report, cluster.DefaultConfig())
			return ok && err == nil
		})
		t.Logf("cluster status:\n%s", report.String())
	})
}

// fltListEntry is a row of `detour list -o json` (client/cli.ListEntry).
type fltListEntry struct {
	Workload   string `json:"workload"`
	AgentOptIn bool   `json:"agentOptIn"`
	AgentPods  int    `json:"agentPods"`
	Pods       int    `json:"pods"`
}

type fltFixture struct {
	t     *testing.T
	ctx   context.Context
	cfg   *rest.Config
	cs    kubernetes.Interface
	u     *user
	ns    string
	name  string // the intercept: web-NS
	url   string
	local int
}

// user is the fixture's user bound to t: same daemon, but failures end t.
func (f *fltFixture) user(t *testing.T) *user {
	return &user{t: t, bin: f.u.bin, home: f.u.home, kube: f.u.kube}
}

func (f *fltFixture) intercept(t *testing.T) {
	t.Helper()
	f.user(t).must("intercept", "web", "-n", f.ns, "--port", fmt.Sprintf("%d:http", f.local), "--mechanism", "tcp")
}

type fltPod struct {
	Pod        string `json:"pod"`
	State      string `json:"state"`
	LastError  string `json:"lastError"`
	Reconnects int    `json:"reconnects"`
}

type fltIntercept struct {
	Name  string   `json:"name"`
	State string   `json:"state"`
	Pods  []fltPod `json:"pods"`
}

func (ic *fltIntercept) reconnects() map[string]int {
	m := map[string]int{}
	if ic != nil {
		for _, p := range ic.Pods {
			m[p.Pod] = p.Reconnects
		}
	}
	return m
}

type fltStatusReport struct {
	Daemon *struct {
		PID int `json:"pid"`
	} `json:"daemon"`
	Intercepts []fltIntercept `json:"intercepts"`
}

func (s fltStatusReport) intercept(name string) *fltIntercept {
	for i := range s.Intercepts {
		if s.Intercepts[i].Name == name {
			return &s.Intercepts[i]
		}
	}
	return nil
}

func fltPodState(ic *fltIntercept, pod string) fltPod {
	if ic != nil {
		for _, p := range ic.Pods {
			if p.Pod == pod {
				return p
			}
		}
	}
	return fltPod{}
}

func (f *fltFixture) status(t *testing.T) fltStatusReport {
	t.Helper()
	r := f.user(t).must("status", "-o", "json")
	var st fltStatusReport
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, r.stdout)
	}
	return st
}

// fltAgentPods lists the workload's pods that the intercept should hold:
// running, not being deleted, with a ready agent.
func fltAgentPods(t *testing.T, f *fltFixture) []string {
	t.Helper()
	pods, err := f.cs.CoreV1().Pods(f.ns).List(f.ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
			continue
		}
		for _, c := range p.Status.ContainerStatuses {
			if c.Name == annotations.AgentContainerName && c.Ready {
				names = append(names, p.Name)
			}
		}
	}
	sort.Strings(names)
	return names
}

// waitHeld waits until exactly n pods have a ready agent and the intercept
// is active on each of them and on no other, and returns how long it took.
func (f *fltFixture) waitHeld(t *testing.T, n int, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var pods []string
	var ic *fltIntercept
	for {
		pods = fltAgentPods(t, f)
		ic = f.status(t).intercept(f.name)
		if len(pods) == n && ic != nil && len(ic.Pods) == n {
			ok := true
			for i, p := range ic.Pods {
				ok = ok && p.State == "active" && p.Pod == pods[i]
			}
			if ok {
				return time.Since(start).Round(time.Millisecond)
			}
		}
		if time.Since(start) > within {
			t.Fatalf("not within %s: the intercept active on exactly the %d pods with a ready agent; pods %v, intercept %+v\n%s",
				within, n, pods, ic, describePods(f.ctx, f.cs, f.ns))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitReconnected waits until every pod in before is active again with
// more reconnects than before, and returns the time since from.
func (f *fltFixture) waitReconnected(t *testing.T, before map[string]int, from time.Time, within time.Duration) time.Duration {
	t.Helper()
	var ic *fltIntercept
	for {
		ic = f.status(t).intercept(f.name)
		ok := ic != nil && len(ic.Pods) == len(before)
		for _, p := range fltPodsOf(ic) {
			n, known := before[p.Pod]
			ok = ok && known && p.State == "active" && p.Reconnects > n
		}
		if ok {
			return time.Since(from).Round(time.Millisecond)
		}
		if time.Since(from) > within {
			t.Fatalf("not within %s: every pod active again with more reconnects than %v; intercept %+v", within, before, ic)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func fltPodsOf(ic *fltIntercept) []fltPod {
	if ic == nil {
		return nil
	}
	return ic.Pods
}

// ready brings the fixture to where every subtest starts: 2 pods with a
// ready agent, the intercept active on both, traffic at the workstation.
// A subtest that failed half-way leaves the next one a fair start.
func (f *fltFixture) ready(t *testing.T) {
	t.Helper()
	d, err := f.cs.AppsV1().Deployments(f.ns).Get(f.ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 2 {
		f.scale(t, 2)
	}
	agents := func() bool { return len(fltAgentPods(t, f)) == 2 }
	for end := time.Now().Add(30 * time.Second); !agents() && time.Now().Before(end); {
		time.Sleep(250 * time.Millisecond)
	}
	if !agents() {
		// Pods that came up without the agent (a subtest failed with the
		// webhook down) get it from a new rollout.
		t.Logf("the pods have no ready agent: rolling the workload")
		f.roll(t)
	}
	fltWait(t, 2*time.Minute, "2 pods with a ready agent", agents)
	held := func() bool {
		ic := f.status(t).intercept(f.name)
		pods := fltAgentPods(t, f)
		if ic == nil || len(ic.Pods) != len(pods) {
			return false
		}
		for i, p := range ic.Pods {
			if p.State != "active" || p.Pod != pods[i] {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(15 * time.Second)
	for !held() && time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
	}
	if !held() {
		t.Logf("the intercept is not held on both pods: intercepting again")
		f.intercept(t)
	}
	f.waitHeld(t, 2, time.Minute)
	fltSteady(t, f.url, "the workstation", fltIsWorkstation, 10, time.Now(), kubeProxyLag)
}

func (f *fltFixture) scale(t *testing.T, n int32) {
	t.Helper()
	patch := []byte(fmt.Sprintf(`{"spec":{"replicas":%d}}`, n))
	if _, err := f.cs.AppsV1().Deployments(f.ns).Patch(f.ctx, "web", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("scale web to %d: %v", n, err)
	}
}

// roll restarts the workload's pods (a changed template annotation, as
// kubectl rollout restart does) and waits until the rollout is complete.
func (f *fltFixture) roll(t *testing.T) {
	t.Helper()
	patch := []byte(fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"faults.detour.dev/restarted-at":%q}}}}}`, time.Now().Format(time.RFC3339Nano)))
	d, err := f.cs.AppsV1().Deployments(f.ns).Patch(f.ctx, "web", types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		t.Fatalf("roll web: %v", err)
	}
	gen, want := d.Generation, *d.Spec.Replicas
	fltWait(t, 2*time.Minute, "the rollout of web completes", func() bool {
		d, err := f.cs.AppsV1().Deployments(f.ns).Get(f.ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false
		}
		s := d.Status
		return s.ObservedGeneration >= gen && s.UpdatedReplicas == want && s.ReadyReplicas == want && s.AvailableReplicas == want && s.Replicas == want
	})
}

// fltScaleWebhook sets the webhook's replicas and waits: for zero, until
// no webhook pod is left; otherwise until they are available and a dry-run
// pod comes back injected.
func fltScaleWebhook(ctx context.Context, cs kubernetes.Interface, n int32) error {
	patch := []byte(fmt.Sprintf(`{"spec":{"replicas":%d}}`, n))
	deps := cs.AppsV1().Deployments(install.Namespace)
	if _, err := deps.Patch(ctx, install.WebhookDeployment, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("scale the webhook to %d: %w", n, err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var ok bool
		if n == 0 {
			pods, err := cs.CoreV1().Pods(install.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + install.WebhookDeployment})
			ok = err == nil && len(pods.Items) == 0
		} else if d, err := deps.Get(ctx, install.WebhookDeployment, metav1.GetOptions{}); err == nil && d.Status.AvailableReplicas == n && d.Status.UpdatedReplicas == n {
			ok, _ = install.VerifyInjection(ctx, cs, metav1.NamespaceDefault)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the webhook is not at %d replicas (and injecting) after 2m", n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func fltIsApp(s string) bool         { return strings.HasPrefix(s, "hello from web-") }
func fltIsWorkstation(s string) bool { return s == "workstation" }

func fltWait(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// fltSteady asks url until n answers in a row satisfy ok, failing t if that
// has not happened within `within` of from; it returns when (after from) the
// first answer of that run came.
func fltSteady(t *testing.T, url, what string, ok func(string) bool, n int, from time.Time, within time.Duration) time.Duration {
	t.Helper()
	inARow, last := 0, ""
	var runStart time.Time
	for inARow < n {
		if time.Since(from) > within {
			t.Fatalf("%s did not answer as %s %d times in a row within %s; last answer %q", url, what, n, within, last)
		}
		at := time.Now()
		if last = who(url); ok(last) {
			if inARow == 0 {
				runStart = at
			}
			inARow++
		} else {
			inARow = 0
			time.Sleep(100 * time.Millisecond)
		}
	}
	return runStart.Sub(from).Round(time.Millisecond)
}

// fltAlways asks url for d and fails t at the first answer that is not ok.
func fltAlways(t *testing.T, url, what string, ok func(string) bool, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if got := who(url); !ok(got) {
			t.Fatalf("%s answered %q; want %s all along", url, got, what)
		}
	}
}

// fltProbe asks a URL on new connections in the background and records
// every answer, to tell afterwards where the traffic went and when.
type fltProbe struct {
	stop, done chan struct{}
	mu         sync.Mutex
	answers    []fltAnswer
}

type fltAnswer struct {
	at   time.Time
	body string
}

func fltStartProbe(url string) *fltProbe {
	p := &fltProbe{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			at := time.Now()
			body := who(url)
			p.mu.Lock()
			p.answers = append(p.answers, fltAnswer{at, body})
			p.mu.Unlock()
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return p
}

func (p *fltProbe) finish() []fltAnswer {
	close(p.stop)
	<-p.done
	return p.answers
}

func fltSince(answers []fltAnswer, from time.Time, ok func(string) bool) string {
	for _, a := range answers {
		if !a.at.Before(from) && ok(a.body) {
			return a.at.Sub(from).Round(time.Millisecond).String()
		}
	}
	return "never"
}

func fltCount(answers []fltAnswer, from time.Time, ok func(string) bool) int {
	n := 0
	for _, a := range answers {
		if !a.at.Before(from) && ok(a.body) {
			n++
		}
	}
	return n
}

var fltAddr = regexp.MustCompile(`\d+\.\d+\.\d+\.\d+:\d+`)

// fltSummary counts the answers by where they came from (the app's by pod),
// and the failures by kind.
func fltSummary(answers []fltAnswer) string {
	var app, ws int
	errs, pods := map[string]int{}, map[string]int{}
	for _, a := range answers {
		switch {
		case fltIsApp(a.body):
			app++
			pods[strings.TrimPrefix(a.body, "hello from ")]++
		case fltIsWorkstation(a.body):
			ws++
		default:
			errs[fltAddr.ReplaceAllString(a.body, "ADDR")]++
		}
	}
	s := fmt.Sprintf("%d answers: %d from the workstation, %d from the app %v, %d failed", len(answers), ws, app, pods, len(answers)-app-ws)
	if len(errs) > 0 {
		s += fmt.Sprintf(" (%v; longest failing run %s)", errs, fltLongestFailure(answers).Round(time.Millisecond))
	}
	return s
}

// fltLongestFailure is the longest time between the first of a run of
// failed answers and the next good one.
func fltLongestFailure(answers []fltAnswer) time.Duration {
	var longest time.Duration
	var first time.Time
	for _, a := range answers {
		bad := !fltIsApp(a.body) && !fltIsWorkstation(a.body)
		switch {
		case bad && first.IsZero():
			first = a.at
		case !bad && !first.IsZero():
			longest = max(longest, a.at.Sub(first))
			first = time.Time{}
		}
	}
	if !first.IsZero() && len(answers) > 0 {
		longest = max(longest, answers[len(answers)-1].at.Sub(first))
	}
	return longest
}

// fltMustBeExe refuses to signal pid unless it runs bin.
func fltMustBeExe(t *testing.T, pid int, bin string) {
	t.Helper()
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil || strings.TrimSuffix(exe, " (deleted)") != bin {
		t.Fatalf("pid %d runs %q (%v), not %s: not signalling it", pid, exe, err, bin)
	}
}

// fltAlive says whether pid exists and is not a zombie.
func fltAlive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] != 'Z'
}

// fltStartDaemon starts `detour daemon` for u as the CLI does on demand
// (own session, output to the daemon log) and waits until it answers. It is
// stopped when top ends.
func fltStartDaemon(t, top *testing.T, u *user) int {
	t.Helper()
	logf, err := os.OpenFile(filepath.Join(u.home, "daemon.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(u.bin, "daemon")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+u.kube, "DETOUR_HOME="+u.home, "XDG_CONFIG_HOME="+filepath.Join(u.home, "config"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start detour daemon: %v", err)
	}
	pid := cmd.Process.Pid
	go func() { _ = cmd.Wait() }()
	top.Cleanup(func() {
		if !fltAlive(pid) {
			return
		}
		(&user{t: top, bin: u.bin, home: u.home, kube: u.kube}).run("quit")
		for i := 0; i < 50 && fltAlive(pid); i++ {
			time.Sleep(100 * time.Millisecond)
		}
		if fltAlive(pid) {
			_ = cmd.Process.Kill()
		}
	})
	fltWait(t, 10*time.Second, "the new daemon answers", func() bool {
		r := u.run("status", "-o", "json")
		var st fltStatusReport
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &st) == nil && st.Daemon != nil && st.Daemon.PID == pid
	})
	return pid
}

func fltAPIServerAddr(t *testing.T, cfg *rest.Config) (string, string) {
	t.Helper()
	u, err := url.Parse(cfg.Host)
	if err != nil || u.Hostname() == "" {
		t.Fatalf("apiserver address %q: %v", cfg.Host, err)
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	return u.Hostname(), port
}

// fltConn is one of the daemon's TCP connections.
type fltConn struct {
	local    string // ip:port
	received uint64 // bytes received so far
}

func (c fltConn) String() string { return c.local }

var (
	fltSSConn     = regexp.MustCompile(`^ESTAB\s+\d+\s+\d+\s+(\S+)\s+\S+\s.*\bpid=(\d+),`)
	fltSSReceived = regexp.MustCompile(`\bbytes_received:(\d+)`)
)

// fltDaemonConns lists pid's established TCP connections to host:port.
func fltDaemonConns(t *testing.T, pid int, host, port string) []fltConn {
	t.Helper()
	out, err := exec.Command("ss", "-tnpiH", "dst", host+":"+port).CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v\n%s", err, out)
	}
	var conns []fltConn
	mine := false
	for _, line := range strings.Split(string(out), "\n") {
		if m := fltSSConn.FindStringSubmatch(line); m != nil {
			mine = m[2] == strconv.Itoa(pid)
			if mine {
				conns = append(conns, fltConn{local: m[1]})
			}
			continue
		}
		if m := fltSSReceived.FindStringSubmatch(line); m != nil && mine && len(conns) > 0 {
			conns[len(conns)-1].received, _ = strconv.ParseUint(m[1], 10, 64)
		}
	}
	return conns
}

// splitDaemonConns tells the daemon's API connection (client-go's one
// HTTP/2 connection: lists and the pod watch) from its port-forwards (one
// WebSocket connection per pod, quiet but for the tunnel's keep-alives).
// A changed pod makes the watch deliver it and the daemon re-list: the one
// connection that then receives kilobytes is the API connection.
func (f *fltFixture) splitDaemonConns(t *testing.T, pid int, host, port string) (fltConn, []fltConn) {
	t.Helper()
	pods := fltAgentPods(t, f)
	var last string
	for attempt := 0; attempt < 3; attempt++ {
		before := fltDaemonConns(t, pid, host, port)
		patch := []byte(fmt.Sprintf(`{"metadata":{"annotations":{"faults.detour.dev/poke":%q}}}`, time.Now().Format(time.RFC3339Nano)))
		if _, err := f.cs.CoreV1().Pods(f.ns).Patch(f.ctx, pods[0], types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond)
		after := fltDaemonConns(t, pid, host, port)
		prev := map[string]uint64{}
		for _, c := range before {
			prev[c.local] = c.received
		}
		var api fltConn
		var rest []fltConn
		var top, second uint64
		deltas := map[string]uint64{}
		for _, c := range after {
			old, ok := prev[c.local]
			if !ok {
				continue // new since: not what we look for
			}
			d := c.received - old
			deltas[c.local] = d
			switch {
			case d > top:
				if api.local != "" {
					rest = append(rest, api)
				}
				second, top, api = top, d, c
			default:
				second = max(second, d)
				rest = append(rest, c)
			}
		}
		last = fmt.Sprintf("bytes received per connection while the pod changed: %v", deltas)
		if top >= 1500 && top > 4*second {
			t.Logf("%s", last)
			sort.Slice(rest, func(i, j int) bool { return rest[i].local < rest[j].local })
			return api, rest
		}
	}
	t.Fatalf("cannot tell the daemon's API connection from its port-forwards: %s", last)
	return fltConn{}, nil
}

func fltHasConn(conns []fltConn, local string) bool {
	for _, c := range conns {
		if c.local == local {
			return true
		}
	}
	return false
}

// fltKillConns destroys the given connections to host:port with `ss -K`
// (SOCK_DESTROY: the daemon's socket fails with ECONNABORTED; the apiserver
// learns of it at its next write).
func fltKillConns(t *testing.T, host, port string, conns []fltConn) {
	t.Helper()
	var sports []string
	for _, c := range conns {
		i := strings.LastIndexByte(c.local, ':')
		sports = append(sports, "sport = :"+c.local[i+1:])
	}
	filter := fmt.Sprintf("dst %s:%s and ( %s )", host, port, strings.Join(sports, " or "))
	out, err := exec.Command("ss", "-K", "-tnH", filter).CombinedOutput()
	if err != nil {
		t.Fatalf("ss -K %q: %v\n%s", filter, err, out)
	}
	if got := strings.Count(strings.TrimSpace(string(out)), "\n") + 1; strings.TrimSpace(string(out)) == "" || got != len(conns) {
		t.Fatalf("ss -K %q destroyed:\n%s\nwant %d connections", filter, out, len(conns))
	}
}

// fltAgentContainer returns the pod's agent container ID (without the
// runtime prefix) and its restart count.
func fltAgentContainer(t *testing.T, f *fltFixture, pod string) (string, int32) {
	t.Helper()
	p, err := f.cs.CoreV1().Pods(f.ns).Get(f.ctx, pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range p.Status.ContainerStatuses {
		if c.Name == annotations.AgentContainerName {
			_, id, _ := strings.Cut(c.ContainerID, "://")
			return id, c.RestartCount
		}
	}
	t.Fatalf("pod %s has no %s container status", pod, annotations.AgentContainerName)
	return "", 0
}

func fltAgentReady(t *testing.T, f *fltFixture, pod string) bool {
	p, err := f.cs.CoreV1().Pods(f.ns).Get(f.ctx, pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range p.Status.ContainerStatuses {
		if c.Name == annotations.AgentContainerName {
			return c.Ready
		}
	}
	return false
}

// The apiserver is one of the local cluster's processes (tests/internal/
// cluster): started with `nsenter --net=<netns> <binary> <args>` in its own
// session, cwd the state directory, output appended to its log, its PID in
// a pid file. A restart re-runs the very command line and environment the
// running process has.

type fltProcSpec struct {
	exe  string
	argv []string
	env  []string
	dir  string
}

func fltAPIServerPIDFile() string {
	return filepath.Join(cluster.DefaultConfig().StateDir, "pids", "kube-apiserver.pid")
}

// fltAPIServerPID reads the pid file and says whether that process is a
// live kube-apiserver.
func fltAPIServerPID() (int, bool) {
	b, err := os.ReadFile(fltAPIServerPIDFile())
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, false
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return pid, false
	}
	exe = strings.TrimSuffix(exe, " (deleted)")
	base := filepath.Base(exe)
	return pid, (base == "kube-apiserver" || base == "nsenter") && fltAlive(pid)
}

func fltReadProc(pid int) (fltProcSpec, error) {
	var s fltProcSpec
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return s, err
	}
	s.exe = strings.TrimSuffix(exe, " (deleted)")
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return s, err
	}
	s.argv = strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if len(s.argv) < 2 || s.argv[0] != s.exe {
		return s, fmt.Errorf("pid %d: command line %q does not start with its executable %s", pid, s.argv, s.exe)
	}
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return s, err
	}
	if e := strings.TrimRight(string(environ), "\x00"); e != "" {
		s.env = strings.Split(e, "\x00")
	}
	if s.dir, err = os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err != nil {
		return s, err
	}
	return s, nil
}

// fltStopProcess sends SIGTERM, then SIGKILL after grace, and waits until
// pid is gone.
func fltStopProcess(pid int, exe string, grace time.Duration) error {
	if got, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || strings.TrimSuffix(got, " (deleted)") != exe {
		return fmt.Errorf("pid %d is not %s (%q, %v): not signalling it", pid, exe, got, err)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return err
	}
	for end := time.Now().Add(grace); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if !fltAlive(pid) {
			return nil
		}
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if !fltAlive(pid) {
			return nil
		}
	}
	return fmt.Errorf("pid %d still alive after SIGKILL", pid)
}

// fltStartAPIServer runs the apiserver again as the cluster does, after the
// same safety precheck, and records its PID in the pid file.
func fltStartAPIServer(ctx context.Context, s fltProcSpec) (int, error) {
	if err := cluster.Precheck(ctx); err != nil {
		return 0, fmt.Errorf("refusing to start kube-apiserver: %w", err)
	}
	cfg := cluster.DefaultConfig()
	logf, err := os.OpenFile(filepath.Join(cfg.StateDir, "logs", "kube-apiserver.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== detour cluster: starting kube-apiserver at %s (restarted by TestFaults)\n", time.Now().Format(time.RFC3339))
	cmd := exec.Command("nsenter", append([]string{"--net=" + cluster.NetnsPath}, s.argv...)...)
	cmd.Env, cmd.Dir = s.env, s.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start kube-apiserver: %w", err)
	}
	pid := cmd.Process.Pid
	go func() { _ = cmd.Wait() }()
	if err := os.WriteFile(fltAPIServerPIDFile(), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return pid, fmt.Errorf("write pid file: %w", err)
	}
	return pid, nil
}

// fltWaitAPIServer polls /readyz until it answers ok.
func fltWaitAPIServer(ctx context.Context, cs kubernetes.Interface, within time.Duration) error {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
		cancel()
		if err == nil && strings.TrimSpace(string(body)) == "ok" {
			return nil
		}
		last = err
		if _, ok := fltAPIServerPID(); !ok {
			return fmt.Errorf("kube-apiserver exited (see its log): %v", last)
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver not ready within %s: %v", within, last)
}
