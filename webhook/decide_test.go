package webhook

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/detour-dev/detour/internal/annotations"
)

func TestShouldInject(t *testing.T) {
	enabled := map[string]string{annotations.Inject: annotations.InjectEnabled}
	for _, tc := range []struct {
		name       string
		pod        corev1.Pod
		namespace  string
		want       bool
		wantReason string
	}{
		{"annotated", pod(enabled), "shop", true, reasonInject},
		{"no annotations", pod(nil), "shop", false, reasonNotAnnotated},
		{"other value", pod(map[string]string{annotations.Inject: "true"}), "shop", false, reasonNotAnnotated},
		{"kube-system", pod(enabled), "kube-system", false, reasonExcludedNamespace},
		{"detour-system", pod(enabled), "detour-system", false, reasonExcludedNamespace},
		{"status annotation", pod(map[string]string{annotations.Inject: annotations.InjectEnabled, annotations.Injected: "{}"}), "shop", false, reasonAlreadyInjected},
		{"agent container", withContainer(pod(enabled), annotations.AgentContainerName), "shop", false, reasonAlreadyInjected},
		{"host network", hostNetwork(pod(enabled)), "shop", false, reasonHostNetwork},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, reason := shouldInject(&tc.pod, tc.namespace)
			if got != tc.want || reason != tc.wantReason {
				t.Errorf("shouldInject = %v, %q; want %v, %q", got, reason, tc.want, tc.wantReason)
			}
		})
	}
}

func pod(ann map[string]string) corev1.Pod {
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "p-", Annotations: ann},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
}

func withContainer(p corev1.Pod, name string) corev1.Pod {
	p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: name})
	return p
}

func hostNetwork(p corev1.Pod) corev1.Pod {
	p.Spec.HostNetwork = true
	return p
}

func TestFreePortName(t *testing.T) {
	p := pod(nil)
	p.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "dt-http"}, {Name: "http"}}
	for old, want := range map[string]string{
		"http":            "dt1-http", // dt-http is taken
		"grpc":            "dt-grpc",
		"a-very-long-nam": "dt-a-very-long", // cut to 15, trailing '-' trimmed
		"abcdefghijklmno": "dt-abcdefghijkl",
	} {
		if got := freePortName(&p, old); got != want {
			t.Errorf("freePortName(%q) = %q, want %q", old, got, want)
		}
	}
}
