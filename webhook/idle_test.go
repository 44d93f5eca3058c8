package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/detour-dev/detour/internal/annotations"
)

// TestAgreed pins which workloads lose the annotation: all of whose
// agents ask for it, with one value; one agent that says no, cannot be
// asked, or carries another value keeps it.
func TestAgreed(t *testing.T) {
	dep := WorkloadRef{KindDeployment, "shop", "web"}
	sts := WorkloadRef{KindStatefulSet, "shop", "db"}
	yes := func(pod string, w WorkloadRef) podState {
		return podState{pod: pod, workload: w, value: "v", remove: true}
	}
	no := func(pod string, w WorkloadRef) podState { return podState{pod: pod, workload: w, value: "v"} }
	cases := []struct {
		name string
		pods []podState
		want []reapTarget
	}{
		{"none", nil, nil},
		{"every agent agrees", []podState{yes("a", dep), yes("b", dep)}, []reapTarget{{dep, "v"}}},
		{"one agent saying no keeps the workload", []podState{yes("a", dep), no("b", dep)}, nil},
		{"no first, yes after: still kept", []podState{no("a", dep), yes("b", dep)}, nil},
		{"an agent that cannot be asked keeps it", []podState{yes("a", dep), {pod: "b", workload: dep, value: "v", err: errors.New("timeout")}}, nil},
		{"pods with another value keep it", []podState{yes("a", dep), {pod: "b", workload: dep, value: "w", remove: true}}, nil},
		{"workloads decided apart", []podState{no("a", dep), yes("db-0", sts)}, []reapTarget{{sts, "v"}}},
		{"pods of other kinds ignored", []podState{{pod: "ds", remove: true}, yes("a", dep)}, []reapTarget{{dep, "v"}}},
		{"sorted", []podState{yes("db-0", sts), yes("a", dep)}, []reapTarget{{dep, "v"}, {sts, "v"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := agreed(c.pods); !slices.Equal(got, c.want) {
				t.Fatalf("agreed = %v, want %v", got, c.want)
			}
		})
	}
}

func TestReapInterval(t *testing.T) {
	for maxIdle, want := range map[time.Duration]time.Duration{
		time.Second: 5 * time.Second, 20 * time.Second: 5 * time.Second, 2 * time.Minute: 30 * time.Second, 24 * time.Hour: time.Minute,
	} {
		if got := ReapInterval(maxIdle); got != want {
			t.Errorf("ReapInterval(%s) = %s, want %s", maxIdle, got, want)
		}
	}
}

func optedInTemplate() corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{annotations.Inject: annotations.InjectEnabled, "other": "kept"}}}
}

func ownedPod(name, kind, owner string, phase corev1.PodPhase) *corev1.Pod {
	yes := true
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop",
			Labels:          map[string]string{annotations.IdleLabel: annotations.IdleLabelValue},
			OwnerReferences: []metav1.OwnerReference{{Kind: kind, Name: owner, Controller: &yes}}},
		Status: corev1.PodStatus{Phase: phase, PodIP: "10.0.0.1"},
	}
}

// TestIdleReaperRemovesTheOptInOfIdleWorkloads: one round through a fake
// API: the Deployment whose agents are all idle (through its ReplicaSet)
// and the idle StatefulSet lose detour.dev/inject, nothing else of their
// template; the Deployment with a busy agent, a pending pod's, and a bare
// ReplicaSet whose agent cannot be asked keep it; a second round changes
// nothing.
func TestIdleReaperRemovesTheOptInOfIdleWorkloads(t *testing.T) {
	yes := true
	objs := []runtime.Object{
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"}, Spec: appsv1.DeploymentSpec{Template: optedInTemplate()}},
		&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop", OwnerReferences: []metav1.OwnerReference{{Kind: KindDeployment, Name: "web", Controller: &yes}}}},
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "shop"}, Spec: appsv1.DeploymentSpec{Template: optedInTemplate()}},
		&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "api-1", Namespace: "shop", OwnerReferences: []metav1.OwnerReference{{Kind: KindDeployment, Name: "api", Controller: &yes}}}},
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "shop"}, Spec: appsv1.StatefulSetSpec{Template: optedInTemplate()}},
		&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "cache", Namespace: "shop"}, Spec: appsv1.ReplicaSetSpec{Template: optedInTemplate()}},
	}
	pods := []*corev1.Pod{
		ownedPod("web-1-a", KindReplicaSet, "web-1", corev1.PodRunning),
		ownedPod("web-1-b", KindReplicaSet, "web-1", corev1.PodRunning),
		ownedPod("web-1-new", KindReplicaSet, "web-1", corev1.PodPending), // not asked: no agent serving yet
		ownedPod("api-1-a", KindReplicaSet, "api-1", corev1.PodRunning),
		ownedPod("api-1-b", KindReplicaSet, "api-1", corev1.PodRunning),
		ownedPod("db-0", KindStatefulSet, "db", corev1.PodRunning),
		ownedPod("cache-x", KindReplicaSet, "cache", corev1.PodRunning),
		ownedPod("agent-ds", "DaemonSet", "ds", corev1.PodRunning),
	}
	client := fake.NewClientset(objs...)
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, p := range pods {
		if err := indexer.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex // Ask runs concurrently
	var asked []string
	r := &Reaper{
		Log: zaptest.NewLogger(t), Client: client, Rule: IdleRule, Pods: corelisters.NewPodLister(indexer), Interval: time.Second,
		Ask: func(_ context.Context, p *corev1.Pod) (bool, error) {
			mu.Lock()
			asked = append(asked, p.Name)
			mu.Unlock()
			switch p.Name {
			case "api-1-b":
				return false, nil
			case "cache-x":
				return false, errors.New("connection refused")
			case "web-1-new":
				t.Errorf("asked a pending pod")
			}
			return true, nil
		},
	}
	var removed []WorkloadRef
	r.OnRemove = func(w WorkloadRef) { removed = append(removed, w) }
	ctx := context.Background()
	if err := r.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	want := []WorkloadRef{{KindDeployment, "shop", "web"}, {KindStatefulSet, "shop", "db"}}
	if !slices.Equal(removed, want) {
		t.Fatalf("removed %v, want %v", removed, want)
	}
	if slices.Contains(asked, "agent-ds") {
		t.Errorf("asked a pod of a kind the reaper does not handle")
	}
	annotationsOf := func(kind, name string) map[string]string {
		switch kind {
		case KindDeployment:
			d, _ := client.AppsV1().Deployments("shop").Get(ctx, name, metav1.GetOptions{})
			return d.Spec.Template.Annotations
		case KindStatefulSet:
			s, _ := client.AppsV1().StatefulSets("shop").Get(ctx, name, metav1.GetOptions{})
			return s.Spec.Template.Annotations
		}
		rs, _ := client.AppsV1().ReplicaSets("shop").Get(ctx, name, metav1.GetOptions{})
		return rs.Spec.Template.Annotations
	}
	for _, c := range []struct {
		kind, name string
		optedIn    bool
	}{{KindDeployment, "web", false}, {KindStatefulSet, "db", false}, {KindDeployment, "api", true}, {KindReplicaSet, "cache", true}} {
		a := annotationsOf(c.kind, c.name)
		if _, ok := a[annotations.Inject]; ok != c.optedIn || a["other"] != "kept" {
			t.Errorf("%s %s: template annotations %v, want opted in %v and the rest kept", c.kind, c.name, a, c.optedIn)
		}
	}
	removed = nil
	if err := r.Reap(ctx); err != nil || len(removed) > 0 {
		t.Fatalf("second round: removed %v, %v; want nothing", removed, err)
	}
}

// TestInjectWithMaxIdle: with AgentMaxIdle the agent gets --max-idle and
// the pod the label the reaper watches; without it (every golden case)
// neither.
func TestInjectWithMaxIdle(t *testing.T) {
	raw, services := loadCase(t, "testdata/named-target-port.yaml")
	var pod corev1.Pod
	if err := json.Unmarshal(raw, &pod); err != nil {
		t.Fatal(err)
	}
	for _, maxIdle := range []time.Duration{0, 90 * time.Second} {
		cfg := DefaultInjectConfig()
		cfg.AgentMaxIdle = maxIdle
		out, err := inject(&pod, services, cfg)
		if err != nil {
			t.Fatal(err)
		}
		agent := out.Spec.Containers[len(out.Spec.Containers)-1]
		i := slices.Index(agent.Args, "--max-idle")
		labelled := out.Labels[annotations.IdleLabel] == annotations.IdleLabelValue
		if maxIdle == 0 && (i >= 0 || labelled) {
			t.Fatalf("off: args %v, labels %v", agent.Args, out.Labels)
		}
		if maxIdle > 0 && (i < 0 || agent.Args[i+1] != "1m30s" || !labelled) {
			t.Fatalf("max idle %s: args %v, labels %v", maxIdle, agent.Args, out.Labels)
		}
	}
}
