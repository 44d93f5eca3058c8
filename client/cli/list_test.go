package cli

import (
	"context"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes/fake"
)

func deployment(ns, name string, lbl map[string]string) *appsv1.Deployment {
	sel := map[string]string{"app": name}
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbl},
		Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel}}}}
}

func service(ns, name string, sel map[string]string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{Selector: sel}}
}

// TestListWorkloads: one namespace or all (-A), a label selector (-l) on
// the workloads' own labels, Services only from the workload's namespace,
// your intercepts by namespace.
func TestListWorkloads(t *testing.T) {
	cs := fake.NewClientset(
		deployment("shop", "web", map[string]string{"team": "payments"}),
		deployment("shop", "cart", map[string]string{"team": "checkout"}),
		deployment("blog", "web", map[string]string{"team": "payments"}),
		service("shop", "web", map[string]string{"app": "web"}),
		service("blog", "web-svc", map[string]string{"app": "web"}),
	)
	mine := map[string][]string{"blog/deployment/web": {"web-blog"}}
	type row struct{ ns, w, svcs, mine string }
	rows := func(es []ListEntry) []row {
		var out []row
		for _, e := range es {
			r := row{ns: e.Namespace, w: e.Workload}
			for _, s := range e.Services {
				r.svcs += s + ";"
			}
			for _, m := range e.Intercepted {
				r.mine += m + ";"
			}
			out = append(out, r)
		}
		return out
	}
	for _, c := range []struct {
		name, ns, sel string
		want          []row
	}{
		{"one namespace", "shop", "", []row{{"shop", "deployment/cart", "", ""}, {"shop", "deployment/web", "web;", ""}}},
		{"all namespaces", "", "", []row{{"blog", "deployment/web", "web-svc;", "web-blog;"}, {"shop", "deployment/cart", "", ""}, {"shop", "deployment/web", "web;", ""}}},
		{"all namespaces, a selector", "", "team=payments", []row{{"blog", "deployment/web", "web-svc;", "web-blog;"}, {"shop", "deployment/web", "web;", ""}}},
		{"a set selector", "shop", "team notin (payments)", []row{{"shop", "deployment/cart", "", ""}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			sel, err := labels.Parse(c.sel)
			if err != nil {
				t.Fatal(err)
			}
			es, err := listWorkloads(context.Background(), cs, c.ns, sel, mine)
			if err != nil {
				t.Fatal(err)
			}
			got := rows(es)
			if len(got) != len(c.want) {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Fatalf("row %d: got %+v, want %+v", i, got[i], c.want[i])
				}
			}
		})
	}
}
