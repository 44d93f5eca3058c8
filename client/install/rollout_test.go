package install

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/detour-dev/detour/client/internal/workload"
	"github.com/detour-dev/detour/internal/annotations"
)

// TestUnannotateRollouts: uninstall takes detour.dev/inject off Argo
// Rollouts too, keeping their other annotations.
func TestUnannotateRollouts(t *testing.T) {
	ro := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
		"metadata": map[string]any{"name": "web", "namespace": "shop"},
		"spec": map[string]any{
			"selector": map[string]any{"matchLabels": map[string]any{"app": "web"}},
			"template": map[string]any{
				"metadata": map[string]any{"labels": map[string]any{"app": "web"},
					"annotations": map[string]any{annotations.Inject: annotations.InjectEnabled, annotations.Container: "app"}},
				"spec": map[string]any{"containers": []any{map[string]any{"name": "app", "image": "web:1"}}},
			},
		},
	}}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{workload.RolloutResource: "RolloutList"}, ro)
	cs := workload.WithDynamic(newClientset(), dyn)
	var progress bytes.Buffer
	var sum UninstallSummary
	if err := unannotateWorkloads(context.Background(), cs, &progress, &sum); err != nil {
		t.Fatal(err)
	}
	if want := []ObjectRef{{"Rollout", "shop", "web"}}; !slices.Equal(sum.Unannotated, want) {
		t.Fatalf("unannotated %v, want %v", sum.Unannotated, want)
	}
	if !strings.Contains(progress.String(), "Rollout shop/web: rolls out without the agent") {
		t.Errorf("progress: %q", progress.String())
	}
	u, _ := dyn.Resource(workload.RolloutResource).Namespace("shop").Get(context.Background(), "web", metav1.GetOptions{})
	a, _, _ := unstructured.NestedStringMap(u.Object, "spec", "template", "metadata", "annotations")
	if _, ok := a[annotations.Inject]; ok || a[annotations.Container] != "app" {
		t.Errorf("annotations %v: want inject removed, the rest kept", a)
	}
}
