package daemon

import (
	"context"
	"testing"

	"go.uber.org/zap/zaptest"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/detour-dev/detour/internal/annotations"
)

// TestStopGivesTheAppBack: a --replace intercept's end (leave, quit, a
// failed create: all stop the runner) removes its detour.dev/replace; one
// stopped to be re-created with the same replace keeps it.
func TestStopGivesTheAppBack(t *testing.T) {
	value := annotations.ReplaceSpec{By: "alice@laptop", Grace: "1m0s"}.Encode()
	for _, keep := range []bool{false, true} {
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "worker", Namespace: "shop"},
			Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
				annotations.Inject: annotations.InjectEnabled, annotations.Replace: value}}}}}
		cs := fake.NewSimpleClientset(d)
		req := InterceptRequest{Name: "worker", Namespace: "shop", Workload: "deployment/worker", Mechanism: "tcp", Replace: value}
		r := newRunner(context.Background(), req, identity{}, nil, cs, zaptest.NewLogger(t))
		r.keepReplace.Store(keep)
		r.stop()
		got, err := cs.AppsV1().Deployments("shop").Get(context.Background(), "worker", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := got.Spec.Template.Annotations[annotations.Replace]; ok != keep {
			t.Errorf("keep %v: template annotations %v", keep, got.Spec.Template.Annotations)
		}
	}
}
