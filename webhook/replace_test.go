package webhook

import (
	"context"
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

// TestReplaceRuleDecide: the restorer removes detour.dev/replace only on
// an agent's restore: true.
func TestReplaceRuleDecide(t *testing.T) {
	for body, want := range map[string]bool{
		`{"held":false,"unheldSeconds":61,"graceSeconds":60,"restore":true}`: true,
		`{"held":true,"graceSeconds":60}`:                                    false,
		`{"held":false,"unheldSeconds":5,"graceSeconds":60,"restore":false}`: false,
	} {
		got, err := ReplaceRule.Decide([]byte(body))
		if err != nil || got != want {
			t.Errorf("%s: %v, %v; want %v", body, got, err, want)
		}
	}
	if _, err := ReplaceRule.Decide([]byte("not json")); err == nil {
		t.Error("a report that is not JSON was read")
	}
}

// TestRestorerGivesTheAppBack: one round through a fake API. The
// Deployment whose replaced agents all ask for their app back loses
// detour.dev/replace (nothing else); one whose template carries another
// developer's replace since keeps it (the JSON patch tests the value); one
// with an agent still holding an intercept keeps it.
func TestRestorerGivesTheAppBack(t *testing.T) {
	yes := true
	mine := annotations.ReplaceSpec{By: "alice@laptop", Grace: "1m"}.Encode()
	theirs := annotations.ReplaceSpec{By: "bob@desk", Grace: "1m"}.Encode()
	template := func(v string) corev1.PodTemplateSpec {
		return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
			annotations.Inject: annotations.InjectEnabled, annotations.Replace: v, "other": "kept"}}}
	}
	var objs []runtime.Object
	for _, d := range []struct{ name, value string }{{"web", mine}, {"api", theirs}, {"busy", mine}} {
		objs = append(objs,
			&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: d.name, Namespace: "shop"}, Spec: appsv1.DeploymentSpec{Template: template(d.value)}},
			&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: d.name + "-1", Namespace: "shop", OwnerReferences: []metav1.OwnerReference{{Kind: KindDeployment, Name: d.name, Controller: &yes}}}})
	}
	client := fake.NewClientset(objs...)
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, p := range []struct{ name, rs string }{{"web-1-a", "web-1"}, {"web-1-b", "web-1"}, {"api-1-a", "api-1"}, {"busy-1-a", "busy-1"}} {
		pod := ownedPod(p.name, KindReplicaSet, p.rs, corev1.PodRunning)
		pod.Labels = map[string]string{annotations.ReplacedLabel: annotations.ReplacedLabelValue}
		pod.Annotations = map[string]string{annotations.Replace: mine}
		if err := indexer.Add(pod); err != nil {
			t.Fatal(err)
		}
	}
	var removed []WorkloadRef
	r := &Reaper{
		Log: zaptest.NewLogger(t), Client: client, Rule: ReplaceRule, Pods: corelisters.NewPodLister(indexer), Interval: time.Second,
		Ask:      func(_ context.Context, p *corev1.Pod) (bool, error) { return p.Name != "busy-1-a", nil },
		OnRemove: func(w WorkloadRef) { removed = append(removed, w) },
	}
	ctx := context.Background()
	if err := r.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != (WorkloadRef{KindDeployment, "shop", "web"}) {
		t.Fatalf("restored %v, want only deployment shop/web", removed)
	}
	for name, replaced := range map[string]bool{"web": false, "api": true, "busy": true} {
		d, err := client.AppsV1().Deployments("shop").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		a := d.Spec.Template.Annotations
		if _, ok := a[annotations.Replace]; ok != replaced || a["other"] != "kept" || a[annotations.Inject] != annotations.InjectEnabled {
			t.Errorf("deployment %s: template annotations %v, want replaced %v and the rest kept", name, a, replaced)
		}
	}
}
