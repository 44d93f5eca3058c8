package webhook

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
)

// ListerServices is a ServiceLister backed by an informer cache: admission
// never waits on the API server for Services.
type ListerServices struct {
	Lister corelisters.ServiceLister
}

// ListServices returns copies of the cached Services of namespace.
func (l ListerServices) ListServices(_ context.Context, namespace string) ([]corev1.Service, error) {
	cached, err := l.Lister.Services(namespace).List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("list services in %s: %w", namespace, err)
	}
	out := make([]corev1.Service, 0, len(cached))
	for _, s := range cached {
		out = append(out, *s) // inject only reads them; a shallow copy is enough
	}
	return out, nil
}

// LiveServices is a ServiceLister that asks the API server.
type LiveServices struct {
	Client kubernetes.Interface
}

// ListServices lists the Services of namespace from the API server.
func (l LiveServices) ListServices(ctx context.Context, namespace string) ([]corev1.Service, error) {
	list, err := l.Client.CoreV1().Services(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list services in %s: %w", namespace, err)
	}
	return list.Items, nil
}
