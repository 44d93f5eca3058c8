package workload

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Workload is the part of a workload object detour needs.
type Workload struct {
	Kind      string
	Name      string
	Namespace string
	Selector  *metav1.LabelSelector
	Template  corev1.PodTemplateSpec
	// Controlled: the object has a controller (a ReplicaSet of a
	// Deployment or a Rollout); kinds with SkipControlled leave it to that
	// controller.
	Controlled bool
}

// Ref is "kind/name", as shown to users.
func (w Workload) Ref() string { return strings.ToLower(w.Kind) + "/" + w.Name }

// PodSelector is the workload's selector of its pods.
func (w Workload) PodSelector() (labels.Selector, error) {
	sel, err := metav1.LabelSelectorAsSelector(w.Selector)
	if err != nil {
		return nil, fmt.Errorf("%s selector: %w", w.Ref(), err)
	}
	return sel, nil
}

// spec is the part of a workload's spec that every kind shares.
type spec struct {
	Replicas *int32                 `json:"replicas,omitempty"`
	Selector *metav1.LabelSelector  `json:"selector,omitempty"`
	Template corev1.PodTemplateSpec `json:"template"`
}

func newWorkload(kind string, m metav1.Object, s spec) Workload {
	return Workload{Kind: kind, Name: m.GetName(), Namespace: m.GetNamespace(), Selector: s.Selector, Template: s.Template,
		Controlled: metav1.GetControllerOfNoCopy(m) != nil}
}
