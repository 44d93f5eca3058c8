package workload

import (
	"context"
	"errors"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// custom is a kind served by a CustomResourceDefinition, through the
// dynamic client; its spec has the shape of a Deployment's (replicas,
// selector, template), as Argo Rollouts' Rollout does.
type custom struct{ gvr schema.GroupVersionResource }

// errNoDynamic: the clientset was not given a dynamic client (WithDynamic).
var errNoDynamic = errors.New("no dynamic client for custom resources")

func (c custom) resource(cs kubernetes.Interface, ns string) (dynamic.ResourceInterface, error) {
	d := dynamicOf(cs)
	if d == nil {
		return nil, fmt.Errorf("%s: %w", c.gvr.GroupResource(), errNoDynamic)
	}
	return d.Resource(c.gvr).Namespace(ns), nil
}

func (c custom) list(ctx context.Context, cs kubernetes.Interface, kind, ns string, opts metav1.ListOptions) ([]Workload, error) {
	r, err := c.resource(cs, ns)
	if err != nil {
		return nil, err
	}
	l, err := r.List(ctx, opts)
	if err != nil {
		return nil, err
	}
	ws := make([]Workload, 0, len(l.Items))
	for i := range l.Items {
		if w, ok := c.from(kind, &l.Items[i]); ok {
			ws = append(ws, w)
		}
	}
	return ws, nil
}

func (c custom) replicas(ctx context.Context, cs kubernetes.Interface, ns, name string) (*int32, error) {
	r, err := c.resource(cs, ns)
	if err != nil {
		return nil, err
	}
	u, err := r.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	s, err := customSpec(u)
	if err != nil {
		return nil, err
	}
	return s.Replicas, nil
}

func (c custom) patch(ctx context.Context, cs kubernetes.Interface, ns, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions) error {
	r, err := c.resource(cs, ns)
	if err != nil {
		return err
	}
	_, err = r.Patch(ctx, name, pt, data, opts)
	return err
}

// from takes an unstructured object of this kind. One without a pod
// template of its own (a Rollout with spec.workloadRef, whose template is
// another object's) is not a workload detour can opt in.
func (c custom) from(kind string, obj runtime.Object) (Workload, bool) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok || u.GetKind() != kind || u.GroupVersionKind().Group != c.gvr.Group {
		return Workload{}, false
	}
	s, err := customSpec(u)
	if err != nil || len(s.Template.Spec.Containers) == 0 {
		return Workload{}, false
	}
	return newWorkload(kind, u, s), true
}

func customSpec(u *unstructured.Unstructured) (spec, error) {
	var s spec
	m, ok, err := unstructured.NestedMap(u.Object, "spec")
	if err != nil || !ok {
		return s, fmt.Errorf("%s %s/%s has no spec: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, &s); err != nil {
		return s, fmt.Errorf("read the spec of %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return s, nil
}

// withDynamic is a clientset that also carries a dynamic client.
type withDynamic struct {
	kubernetes.Interface
	dyn dynamic.Interface
}

// WithDynamic attaches a dynamic client to cs, through which the table
// reaches the custom kinds (Rollout). Everything else uses cs as it is.
func WithDynamic(cs kubernetes.Interface, dyn dynamic.Interface) kubernetes.Interface {
	return withDynamic{Interface: cs, dyn: dyn}
}

func dynamicOf(cs kubernetes.Interface) dynamic.Interface {
	if w, ok := cs.(withDynamic); ok {
		return w.dyn
	}
	return nil
}
