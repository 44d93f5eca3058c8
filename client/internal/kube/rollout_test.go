package kube

import (
	"bytes"
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/detour-dev/detour/client/internal/resolve"
	"github.com/detour-dev/detour/client/internal/workload"
	"github.com/detour-dev/detour/internal/annotations"
)

func webRollout(replicas int64) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
		"metadata": map[string]any{"name": "web", "namespace": "ns"},
		"spec": map[string]any{
			"replicas": replicas,
			"selector": map[string]any{"matchLabels": map[string]any{"app": "web"}},
			"template": map[string]any{
				"metadata": map[string]any{"labels": map[string]any{"app": "web"}},
				"spec":     map[string]any{"containers": []any{map[string]any{"name": "app", "image": "web:1"}}},
			},
			"strategy": map[string]any{"canary": map[string]any{}},
		},
	}}
}

// TestRolloutWorkload: a Rollout is listed, opted in (the annotation on its
// pod template, through the dynamic client) and waited for like a
// Deployment.
func TestRolloutWorkload(t *testing.T) {
	ctx := context.Background()
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{workload.RolloutResource: "RolloutList"}, webRollout(2))
	cs := workload.WithDynamic(fake.NewClientset(pod("a", corev1.PodRunning, true, false), pod("b", corev1.PodRunning, true, false)), dyn)
	c, err := Workloads(ctx, cs, "ns", labels.Everything())
	if err != nil {
		t.Fatal(err)
	}
	w, err := resolve.FindWorkload("web", "ns", c)
	if err != nil || w.Kind != resolve.KindRollout {
		t.Fatalf("FindWorkload = %+v, %v (kinds %v)", w, err, c.Kinds)
	}
	if err := SetInjection(ctx, cs, w, true, "reg/agent:2"); err != nil {
		t.Fatal(err)
	}
	u, err := dyn.Resource(workload.RolloutResource).Namespace("ns").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a, _, _ := unstructured.NestedStringMap(u.Object, "spec", "template", "metadata", "annotations")
	if a[annotations.Inject] != annotations.InjectEnabled || a[annotations.AgentImage] != "reg/agent:2" {
		t.Fatalf("annotations after enable: %v", a)
	}
	if n, err := Replicas(ctx, cs, w); err != nil || n != 2 {
		t.Fatalf("Replicas = %d, %v", n, err)
	}
	var out bytes.Buffer
	if ready, err := WaitForAgents(ctx, cs, w, time.Second, &out); err != nil || len(ready) != 2 {
		t.Fatalf("WaitForAgents = %v, %v", names(ready), err)
	}
	if err := SetInjection(ctx, cs, w, false, ""); err != nil {
		t.Fatal(err)
	}
	u, _ = dyn.Resource(workload.RolloutResource).Namespace("ns").Get(ctx, "web", metav1.GetOptions{})
	if a, _, _ := unstructured.NestedStringMap(u.Object, "spec", "template", "metadata", "annotations"); a[annotations.Inject] != "" {
		t.Fatalf("annotations after disable: %v", a)
	}
	// Without Argo Rollouts (no dynamic client here) the kind is not listed.
	if c, err := Workloads(ctx, fake.NewClientset(), "ns", labels.Everything()); err != nil || len(c.Kinds) != 3 {
		t.Fatalf("kinds without Argo Rollouts: %v, %v", c.Kinds, err)
	}
}
