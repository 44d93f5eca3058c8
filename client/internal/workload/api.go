package workload

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// typedClient is the part of a typed client (DeploymentInterface, ...)
// the table uses.
type typedClient[T any, L runtime.Object] interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	List(ctx context.Context, opts metav1.ListOptions) (L, error)
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (T, error)
}

// typedAPI is a built-in kind, through the typed clientset.
type typedAPI[T interface {
	runtime.Object
	metav1.Object
}, L runtime.Object] struct {
	client func(cs kubernetes.Interface, ns string) typedClient[T, L]
	spec   func(T) spec
}

func typed[T interface {
	runtime.Object
	metav1.Object
}, L runtime.Object](client func(kubernetes.Interface, string) typedClient[T, L], spec func(T) spec) api {
	return typedAPI[T, L]{client: client, spec: spec}
}

func (a typedAPI[T, L]) list(ctx context.Context, cs kubernetes.Interface, kind, ns string, opts metav1.ListOptions) ([]Workload, error) {
	l, err := a.client(cs, ns).List(ctx, opts)
	if err != nil {
		return nil, err
	}
	items, err := meta.ExtractList(l)
	if err != nil {
		return nil, fmt.Errorf("read %s list: %w", kind, err)
	}
	ws := make([]Workload, 0, len(items))
	for _, it := range items {
		if w, ok := a.from(kind, it); ok {
			ws = append(ws, w)
		}
	}
	return ws, nil
}

func (a typedAPI[T, L]) replicas(ctx context.Context, cs kubernetes.Interface, ns, name string) (*int32, error) {
	o, err := a.client(cs, ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return a.spec(o).Replicas, nil
}

func (a typedAPI[T, L]) patch(ctx context.Context, cs kubernetes.Interface, ns, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions) error {
	_, err := a.client(cs, ns).Patch(ctx, name, pt, data, opts)
	return err
}

func (a typedAPI[T, L]) from(kind string, obj runtime.Object) (Workload, bool) {
	o, ok := obj.(T)
	if !ok {
		return Workload{}, false
	}
	return newWorkload(kind, o, a.spec(o)), true
}
