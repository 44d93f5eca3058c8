package workload

import (
	"context"
	"errors"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

var (
	sel      = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	template = corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "web:1"}}}}
)

func ptr[T any](v T) *T { return &v }

func objMeta(name string, controlled bool) metav1.ObjectMeta {
	m := metav1.ObjectMeta{Name: name, Namespace: "ns"}
	if controlled {
		m.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "owner", UID: "u", Controller: ptr(true)}}
	}
	return m
}

// kindCase is one row per entry of Kinds: how to make an object of the
// kind (replicas nil: unset) and a clientset holding objects.
type kindCase struct {
	kind           string
	aliases        []string
	rolls, skipCtl bool
	object         func(name string, replicas *int32, controlled bool) runtime.Object
	clientset      func(objs ...runtime.Object) kubernetes.Interface
}

func typedClientset(objs ...runtime.Object) kubernetes.Interface { return fake.NewClientset(objs...) }

var kindCases = []kindCase{
	{kind: KindDeployment, aliases: []string{"deployment", "deployments", "deploy"}, rolls: true,
		object: func(n string, r *int32, c bool) runtime.Object {
			return &appsv1.Deployment{ObjectMeta: objMeta(n, c), Spec: appsv1.DeploymentSpec{Replicas: r, Selector: sel, Template: template}}
		},
		clientset: typedClientset},
	{kind: KindStatefulSet, aliases: []string{"statefulset", "statefulsets", "sts"}, rolls: true,
		object: func(n string, r *int32, c bool) runtime.Object {
			return &appsv1.StatefulSet{ObjectMeta: objMeta(n, c), Spec: appsv1.StatefulSetSpec{Replicas: r, Selector: sel, Template: template}}
		},
		clientset: typedClientset},
	{kind: KindReplicaSet, aliases: []string{"replicaset", "replicasets", "rs"}, skipCtl: true,
		object: func(n string, r *int32, c bool) runtime.Object {
			return &appsv1.ReplicaSet{ObjectMeta: objMeta(n, c), Spec: appsv1.ReplicaSetSpec{Replicas: r, Selector: sel, Template: template}}
		},
		clientset: typedClientset},
	{kind: KindRollout, aliases: []string{"rollout", "rollouts", "ro"}, rolls: true,
		object: func(n string, r *int32, c bool) runtime.Object { return rollout(n, r, c) },
		clientset: func(objs ...runtime.Object) kubernetes.Interface {
			return WithDynamic(fake.NewClientset(), dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
				map[schema.GroupVersionResource]string{RolloutResource: "RolloutList"}, objs...))
		}},
}

// rollout is an Argo Rollout as the API serves it: unstructured, with the
// spec of a Deployment plus a strategy.
func rollout(name string, replicas *int32, controlled bool) *unstructured.Unstructured {
	m := objMeta(name, controlled)
	tmpl, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&template)
	if err != nil {
		panic(err)
	}
	sl, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(sel)
	spec := map[string]any{"selector": sl, "template": tmpl, "strategy": map[string]any{"canary": map[string]any{}}}
	if replicas != nil {
		spec["replicas"] = int64(*replicas)
	}
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "spec": spec}}
	u.SetName(m.Name)
	u.SetNamespace(m.Namespace)
	u.SetOwnerReferences(m.OwnerReferences)
	return u
}

// TestKindsTable: every entry of Kinds has a row, and each row's kind
// lists, converts, counts replicas, patches and names itself as the row
// says.
func TestKindsTable(t *testing.T) {
	if len(kindCases) != len(Kinds) {
		t.Fatalf("%d kinds in the table, %d rows here: add a row for the new kind", len(Kinds), len(kindCases))
	}
	ctx := context.Background()
	for i, c := range kindCases {
		t.Run(c.kind, func(t *testing.T) {
			k := Kinds[i]
			if k.Name != c.kind || k.Rolls != c.rolls || k.SkipControlled != c.skipCtl {
				t.Fatalf("entry %d = %s rolls=%v skipControlled=%v; want %s %v %v", i, k.Name, k.Rolls, k.SkipControlled, c.kind, c.rolls, c.skipCtl)
			}
			for _, a := range c.aliases {
				if got, ok := ByAlias(a); !ok || got.Name != c.kind {
					t.Errorf("ByAlias(%q) = %s, %v", a, got.Name, ok)
				}
			}
			if got, err := ByName(c.kind); err != nil || got.Name != c.kind {
				t.Errorf("ByName(%q) = %s, %v", c.kind, got.Name, err)
			}
			cs := c.clientset(c.object("web", ptr[int32](3), false), c.object("unset", nil, false), c.object("owned", nil, true))
			ws, served, err := k.List(ctx, cs, "ns", metav1.ListOptions{})
			if err != nil || !served || len(ws) != 3 {
				t.Fatalf("List = %d workloads, served=%v, %v; want 3", len(ws), served, err)
			}
			byName := map[string]Workload{}
			for _, w := range ws {
				byName[w.Name] = w
			}
			w := byName["web"]
			if w.Kind != c.kind || w.Namespace != "ns" || w.Selector.MatchLabels["app"] != "web" || w.Template.Spec.Containers[0].Image != "web:1" || w.Controlled {
				t.Errorf("listed %+v", w)
			}
			if w.Ref() != c.aliases[0]+"/web" {
				t.Errorf("Ref = %q", w.Ref())
			}
			if !k.Standalone(w) || k.Standalone(byName["owned"]) == c.skipCtl {
				t.Errorf("Standalone: web %v, owned %v; skipControlled %v", k.Standalone(w), k.Standalone(byName["owned"]), c.skipCtl)
			}
			if n, err := k.Replicas(ctx, cs, "ns", "web"); err != nil || n != 3 {
				t.Errorf("Replicas(web) = %d, %v; want 3", n, err)
			}
			if n, err := k.Replicas(ctx, cs, "ns", "unset"); err != nil || n != 1 {
				t.Errorf("Replicas(unset) = %d, %v; want 1", n, err)
			}
			patch := []byte(`{"spec":{"template":{"metadata":{"annotations":{"detour.dev/inject":"enabled"}}}}}`)
			if err := k.Patch(ctx, cs, "ns", "web", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
			ws, _, err = k.List(ctx, cs, "ns", metav1.ListOptions{})
			for _, w := range ws {
				if got := w.Template.Annotations["detour.dev/inject"]; err != nil || got != map[bool]string{true: "enabled"}[w.Name == "web"] {
					t.Errorf("after patching web, %s has detour.dev/inject=%q (%v)", w.Name, got, err)
				}
			}
			if fw, ok := FromObject(c.object("x", nil, false)); !ok || fw.Kind != c.kind || fw.Name != "x" {
				t.Errorf("FromObject = %+v, %v", fw, ok)
			}
		})
	}
}

func TestUnknownKinds(t *testing.T) {
	if _, err := ByName("Job"); !errors.Is(err, ErrUnsupportedKind) {
		t.Errorf("ByName(Job): %v", err)
	}
	if _, ok := ByAlias("job"); ok {
		t.Error("ByAlias(job) found a kind")
	}
	if _, ok := FromObject(&corev1.Pod{}); ok {
		t.Error("FromObject(pod) is a workload")
	}
}

func TestListErrorNamesTheKind(t *testing.T) {
	cs := fake.NewClientset()
	cs.PrependReactor("list", "statefulsets", func(_ k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("boom")
	})
	k, _ := ByName(KindStatefulSet)
	if _, _, err := k.List(context.Background(), cs, "", metav1.ListOptions{}); err == nil || err.Error() != "list statefulsets in any namespace: boom" {
		t.Fatalf("err = %v", err)
	}
}

// TestRolloutsWhereNotServed: without a dynamic client, where the cluster
// has no Rollout CRD, or where the user may not list Rollouts, the kind has
// none and is not "served"; other errors are errors.
func TestRolloutsWhereNotServed(t *testing.T) {
	k, _ := ByName(KindRollout)
	ctx := context.Background()
	if ws, served, err := k.List(ctx, fake.NewClientset(), "ns", metav1.ListOptions{}); err != nil || served || len(ws) != 0 {
		t.Errorf("no dynamic client: %v %v %v", ws, served, err)
	}
	for _, c := range []struct {
		name    string
		err     error
		wantErr bool
	}{
		{"no CRD", apierrors.NewNotFound(RolloutResource.GroupResource(), ""), false},
		{"forbidden", apierrors.NewForbidden(RolloutResource.GroupResource(), "", errors.New("rbac")), false},
		{"server error", apierrors.NewInternalError(errors.New("etcd")), true},
	} {
		dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{RolloutResource: "RolloutList"})
		dyn.PrependReactor("list", "rollouts", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, c.err })
		ws, served, err := k.List(ctx, WithDynamic(fake.NewClientset(), dyn), "ns", metav1.ListOptions{})
		if (err != nil) != c.wantErr || served || len(ws) != 0 {
			t.Errorf("%s: %v %v %v", c.name, ws, served, err)
		}
	}
	if _, err := k.Replicas(ctx, fake.NewClientset(), "ns", "web"); !errors.Is(err, errNoDynamic) {
		t.Errorf("Replicas without a dynamic client: %v", err)
	}
}

// TestRolloutWithWorkloadRef: a Rollout whose pods come from another
// object's template (spec.workloadRef) has no template to opt in.
func TestRolloutWithWorkloadRef(t *testing.T) {
	u := rollout("ref", nil, false)
	unstructured.RemoveNestedField(u.Object, "spec", "template")
	_ = unstructured.SetNestedMap(u.Object, map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "spec", "workloadRef")
	if w, ok := FromObject(u); ok {
		t.Fatalf("FromObject = %+v: want none", w)
	}
	if _, ok := FromObject(rollout("ok", nil, false)); !ok {
		t.Fatal("a Rollout with a template is a workload")
	}
}
