package workload

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Names of the kinds, as the API spells them.
const (
	KindDeployment  = "Deployment"
	KindReplicaSet  = "ReplicaSet"
	KindStatefulSet = "StatefulSet"
	KindRollout     = "Rollout"
)

// RolloutResource is Argo Rollouts' Rollout (argoproj.io/v1alpha1).
var RolloutResource = schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "rollouts"}

// ErrUnsupportedKind: a workload of a kind that is not in Kinds.
var ErrUnsupportedKind = errors.New("unsupported kind of workload")

// Kind is one kind of workload and how detour reads and changes it.
type Kind struct {
	Name string // as the API spells it: "Deployment"
	// Aliases are what a user may write before '/' in kind/name, lower
	// case; the first is how detour writes it (deployment/web).
	Aliases []string
	// Rolls: the kind's controller replaces the pods when the pod
	// template changes. A kind that does not (a bare ReplicaSet) gets its
	// pods deleted, for its controller to recreate them from the template.
	Rolls bool
	// SkipControlled: objects of this kind that have a controller are left
	// to that controller (the ReplicaSets of a Deployment or a Rollout).
	SkipControlled bool
	// Custom: served by a CustomResourceDefinition that a cluster may not
	// have, reached through the dynamic client (WithDynamic). Where it is
	// not served, or not listable by the user, or the clientset has no
	// dynamic client, the kind has no workloads.
	Custom bool
	// Replaceable: `detour intercept --replace` may replace its app
	// container, because the webhook's restorer can give the app back when
	// the workstation goes away (it patches Deployments and StatefulSets).
	Replaceable bool
	api         api
}

// api is how a kind is read and changed through the API server.
type api interface {
	list(ctx context.Context, cs kubernetes.Interface, kind, ns string, opts metav1.ListOptions) ([]Workload, error)
	replicas(ctx context.Context, cs kubernetes.Interface, ns, name string) (*int32, error)
	patch(ctx context.Context, cs kubernetes.Interface, ns, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions) error
	from(kind string, obj runtime.Object) (Workload, bool)
}

// Kinds are the kinds of workload detour intercepts, in the order they are
// listed and named in messages.
var Kinds = []Kind{
	{Name: KindDeployment, Aliases: []string{"deployment", "deployments", "deploy"}, Rolls: true, Replaceable: true,
		api: typed(func(cs kubernetes.Interface, ns string) typedClient[*appsv1.Deployment, *appsv1.DeploymentList] {
			return cs.AppsV1().Deployments(ns)
		}, func(d *appsv1.Deployment) spec { return spec{d.Spec.Replicas, d.Spec.Selector, d.Spec.Template} })},
	{Name: KindStatefulSet, Aliases: []string{"statefulset", "statefulsets", "sts"}, Rolls: true, Replaceable: true,
		api: typed(func(cs kubernetes.Interface, ns string) typedClient[*appsv1.StatefulSet, *appsv1.StatefulSetList] {
			return cs.AppsV1().StatefulSets(ns)
		}, func(s *appsv1.StatefulSet) spec { return spec{s.Spec.Replicas, s.Spec.Selector, s.Spec.Template} })},
	{Name: KindReplicaSet, Aliases: []string{"replicaset", "replicasets", "rs"}, SkipControlled: true,
		api: typed(func(cs kubernetes.Interface, ns string) typedClient[*appsv1.ReplicaSet, *appsv1.ReplicaSetList] {
			return cs.AppsV1().ReplicaSets(ns)
		}, func(r *appsv1.ReplicaSet) spec { return spec{r.Spec.Replicas, r.Spec.Selector, r.Spec.Template} })},
	// Argo Rollouts' controller rolls a Rollout's pods by its strategy
	// (canary or blue-green); a strategy that pauses holds the wait for
	// agents until it is promoted.
	{Name: KindRollout, Aliases: []string{"rollout", "rollouts", "ro"}, Rolls: true, Custom: true,
		api: custom{RolloutResource}},
}

// ByName is the kind the API calls name ("Deployment").
func ByName(name string) (Kind, error) {
	for _, k := range Kinds {
		if k.Name == name {
			return k, nil
		}
	}
	return Kind{}, fmt.Errorf("kind %q: %w", name, ErrUnsupportedKind)
}

// ByAlias is the kind a user means by alias (case-insensitive): "deploy",
// "sts", "rollouts".
func ByAlias(alias string) (Kind, bool) {
	alias = strings.ToLower(alias)
	for _, k := range Kinds {
		if slices.Contains(k.Aliases, alias) {
			return k, true
		}
	}
	return Kind{}, false
}

// Builtin are the kinds every cluster serves.
func Builtin() []string {
	var names []string
	for _, k := range Kinds {
		if !k.Custom {
			names = append(names, k.Name)
		}
	}
	return names
}

// Plural is the kind's lower-case plural, for messages ("deployments").
func (k Kind) Plural() string { return k.Aliases[1] }

// Standalone says whether w is a workload of its own: not one a controller
// of another kind manages (when the kind says so).
func (k Kind) Standalone(w Workload) bool { return !k.SkipControlled || !w.Controlled }

// List lists the kind's objects in ns ("" for every namespace), the
// controlled ones included. A custom kind that the cluster does not serve
// (or the user may not list, or without a dynamic client) has none.
// served says whether the kind could be listed.
func (k Kind) List(ctx context.Context, cs kubernetes.Interface, ns string, opts metav1.ListOptions) (ws []Workload, served bool, err error) {
	ws, err = k.api.list(ctx, cs, k.Name, ns, opts)
	switch {
	case err == nil:
		return ws, true, nil
	case k.Custom && (errors.Is(err, errNoDynamic) || apierrors.IsNotFound(err) || apierrors.IsForbidden(err)):
		return nil, false, nil
	}
	where := fmt.Sprintf("in %q", ns)
	if ns == metav1.NamespaceAll {
		where = "in any namespace"
	}
	return nil, false, fmt.Errorf("list %s %s: %w", k.Plural(), where, err)
}

// Replicas is the workload's desired pod count, read fresh (1 when unset).
func (k Kind) Replicas(ctx context.Context, cs kubernetes.Interface, ns, name string) (int, error) {
	r, err := k.api.replicas(ctx, cs, ns, name)
	if err != nil {
		return 0, err
	}
	if r == nil {
		return 1, nil
	}
	return int(*r), nil
}

// Patch patches the workload object.
func (k Kind) Patch(ctx context.Context, cs kubernetes.Interface, ns, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions) error {
	return k.api.patch(ctx, cs, ns, name, pt, data, opts)
}

// FromObject turns an object of one of the kinds (a typed object, or an
// unstructured one of a custom kind) into a Workload.
func FromObject(obj runtime.Object) (Workload, bool) {
	for _, k := range Kinds {
		if w, ok := k.api.from(k.Name, obj); ok {
			return w, true
		}
	}
	return Workload{}, false
}
