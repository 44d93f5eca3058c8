package podport

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Selects says whether the Service sends its traffic to pods with these
// labels: it has a selector and the selector matches. A Service without a
// selector (its endpoints are managed by hand) and an ExternalName Service
// (a DNS alias; Kubernetes ignores its selector) select no pod.
func Selects(svc corev1.Service, podLabels map[string]string) bool {
	if len(svc.Spec.Selector) == 0 || svc.Spec.Type == corev1.ServiceTypeExternalName {
		return false
	}
	return labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(podLabels))
}
