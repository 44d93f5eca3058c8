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

// TestSharesReplace: a replace stays while another intercept of the
// daemon holds it, or the request re-creating the intercept brings it.
func TestSharesReplace(t *testing.T) {
	value := annotations.ReplaceSpec{By: "alice@laptop", Grace: "1m0s"}.Encode()
	req := InterceptRequest{Name: "a", Namespace: "shop", Workload: "deployment/worker", Replace: value}
	run := &runner{req: req}
	d := &Daemon{intercepts: map[string]*runner{}}
	if d.sharesReplace(run, nil) {
		t.Error("alone, it shares")
	}
	d.intercepts["a"] = run
	if d.sharesReplace(run, nil) {
		t.Error("shares with itself")
	}
	next := req
	if !d.sharesReplace(run, &next) {
		t.Error("the re-creating request with the same replace does not keep it")
	}
	next.Replace = ""
	if d.sharesReplace(run, &next) {
		t.Error("a re-creating request without --replace keeps it")
	}
	other := req
	other.Name = "b"
	d.intercepts["b"] = &runner{req: other}
	if !d.sharesReplace(run, nil) {
		t.Error("another intercept holding the same replace does not keep it")
	}
	d.intercepts["b"].req.Workload = "deployment/other"
	if d.sharesReplace(run, nil) {
		t.Error("another workload's replace keeps it")
	}
}
