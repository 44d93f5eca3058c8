package cli

import (
	"context"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
)

// TestCompletionsFromTheCluster: workload names (kind/name where two
// kinds share one), namespaces, --port LOCAL:SVCPORT for each port of the
// Services selecting the workload, and its containers.
func TestCompletionsFromTheCluster(t *testing.T) {
	web := deployment("shop", "web", nil)
	web.Spec.Template.Spec.Containers = []corev1.Container{
		{Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}},
		{Name: "metrics", Ports: []corev1.ContainerPort{{Name: "prom", ContainerPort: 9090}}},
	}
	svc := service("shop", "web", map[string]string{"app": "web"})
	svc.Spec.Ports = []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}, {Port: 9090, TargetPort: intstr.FromInt32(9090)}}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}, Spec: appsv1.StatefulSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}}}
	cs := fake.NewClientset(web, deployment("shop", "cart", nil), sts, svc,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "blog"}})
	ctx := context.Background()
	for _, c := range []struct {
		what      string
		got, want []string
	}{
		{"workloads", workloadNames(ctx, cs, "shop", nil), []string{"cart", "deployment/web", "statefulset/web"}},
		{"namespaces", namespaceNames(ctx, cs, "", nil), []string{"blog", "shop"}},
		{"ports", portSpecs(ctx, cs, "shop", "deployment/web"), []string{"8080:http", "9090:9090"}},
		{"containers", containerNames(ctx, cs, "shop", "deployment/web"), []string{"app", "metrics"}},
		{"ports of a workload that does not exist", portSpecs(ctx, cs, "shop", "nope"), nil},
	} {
		if !slices.Equal(c.got, c.want) {
			t.Errorf("%s: %q, want %q", c.what, c.got, c.want)
		}
	}
}
