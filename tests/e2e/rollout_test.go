//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"

	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/tests/internal/images"
)

var rolloutGVR = schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "rollouts"}

// TestInterceptArgoRollout: an Argo Rollout (rolled by the real Argo
// Rollouts controller the cluster runs) is intercepted like a Deployment:
// detour opts its pod template in, the controller rolls its pods, the
// webhook injects them, the Service's traffic reaches the workstation, and
// leave gives it back to the app.
func TestInterceptArgoRollout(t *testing.T) {
	ctx := context.Background()
	rc := restConfig(t)
	cs := clientset(t, rc)
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	u := newUser(t)
	u.must("install", "--image", images.Detour)
	ns := createNamespace(ctx, t, cs, "rollout")

	labels := map[string]string{"app": "web"}
	svc, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ptrTo(echoTemplate(labels)))
	if err != nil {
		t.Fatal(err)
	}
	ro := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
		"metadata": map[string]any{"name": "web"},
		"spec": map[string]any{
			"replicas": int64(2),
			"selector": map[string]any{"matchLabels": map[string]any{"app": "web"}},
			"template": tmpl,
			// A canary without steps: a new template is rolled out at once.
			"strategy": map[string]any{"canary": map[string]any{}},
		},
	}}
	if _, err := dyn.Resource(rolloutGVR).Namespace(ns).Create(ctx, ro, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create the Rollout (is the Argo Rollouts CRD installed? `go run ./tests/cluster up` deploys it): %v", err)
	}
	url := fmt.Sprintf("http://%s:80/", svc.Spec.ClusterIP)
	eventually(t, 2*time.Minute, "the Rollout's pods answer", func() bool { return strings.HasPrefix(who(url), "hello from web-") })
	local := localServer(t, "workstation")

	r := u.must("intercept", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", local))
	if !strings.Contains(r.stdout, "rollout/web") {
		t.Fatalf("summary:\n%s", r)
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	agents := 0
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		if p.Annotations[annotations.Injected] == "" || len(p.OwnerReferences) == 0 || p.OwnerReferences[0].Kind != "ReplicaSet" {
			t.Errorf("pod %s: injected=%q owners=%v", p.Name, p.Annotations[annotations.Injected], p.OwnerReferences)
		}
		agents++
	}
	if agents != 2 {
		t.Errorf("%d live pods, want the Rollout's 2", agents)
	}
	if !waitForSteady(t, url, "workstation", 10, kubeProxyLag) {
		t.FailNow()
	}
	if l := u.must("list", "-n", ns); !strings.Contains(l.stdout, "rollout/web") || !strings.Contains(l.stdout, "yes (2/2 pods)") {
		t.Errorf("list:\n%s", l)
	}
	u.must("leave", "web-"+ns) // with -n, the intercept is NAME-NS
	eventually(t, 10*time.Second, "the app answers after leave", func() bool { return strings.HasPrefix(who(url), "hello from web-") })

	r = u.must("uninstall", "--agent", "rollout/web", "-n", ns)
	if !strings.Contains(r.stdout, "rollout/web") {
		t.Fatalf("uninstall --agent:\n%s", r)
	}
	got, err := dyn.Resource(rolloutGVR).Namespace(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if a, _, _ := unstructured.NestedStringMap(got.Object, "spec", "template", "metadata", "annotations"); a[annotations.Inject] != "" {
		t.Errorf("the Rollout still opts in after uninstall --agent: %v", a)
	}
}

func ptrTo[T any](v T) *T { return &v }
