package podport

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestSelects(t *testing.T) {
	pod := map[string]string{"app": "web", "track": "stable"}
	for _, c := range []struct {
		name string
		spec corev1.ServiceSpec
		want bool
	}{
		{"matching selector", corev1.ServiceSpec{Selector: map[string]string{"app": "web"}}, true},
		{"all labels must match", corev1.ServiceSpec{Selector: map[string]string{"app": "web", "track": "canary"}}, false},
		{"other app", corev1.ServiceSpec{Selector: map[string]string{"app": "db"}}, false},
		{"no selector selects nothing", corev1.ServiceSpec{}, false},
		{"ExternalName ignores its selector", corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, Selector: map[string]string{"app": "web"}}, false},
		{"headless", corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "web"}}, true},
	} {
		if got := Selects(corev1.Service{Spec: c.spec}, pod); got != c.want {
			t.Errorf("%s: Selects = %v, want %v", c.name, got, c.want)
		}
	}
	if Selects(corev1.Service{Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}}}, nil) {
		t.Error("a pod without labels is selected")
	}
}
