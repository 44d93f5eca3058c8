package install

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/detour-dev/detour/internal/annotations"
)

// becomeReady plays the cluster: once the webhook Deployment exists it
// reports all replicas available, and the webhook publishes its CA.
func becomeReady(ctx context.Context, t *testing.T, cs *fake.Clientset) {
	for ctx.Err() == nil {
		d, err := cs.AppsV1().Deployments(Namespace).Get(ctx, WebhookDeployment, metav1.GetOptions{})
		_, mErr := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, WebhookConfig, metav1.GetOptions{})
		if err != nil || mErr != nil {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		d.Status = appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2, AvailableReplicas: 2}
		if _, err := cs.AppsV1().Deployments(Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{}); err != nil {
			t.Error(err)
		}
		patch := []byte(`[{"op":"add","path":"/webhooks/0/clientConfig/caBundle","value":"Y2E="}]`)
		if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Patch(ctx, WebhookConfig, types.JSONPatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Error(err)
		}
		return
	}
}

func TestInstall(t *testing.T) {
	cs := newClientset()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go becomeReady(ctx, t, cs)
	var progress bytes.Buffer
	sum, err := Install(ctx, cs, Options{Image: "registry.example/detour:v1", Progress: &progress, PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatalf("Install: %v\n%s", err, progress.String())
	}
	if len(sum.Applied) != 10 || sum.ReadyReplicas != 2 || sum.Image != "registry.example/detour:v1" {
		t.Errorf("summary %+v", sum)
	}
	for _, want := range []string{"applied Namespace/detour-system", "applied Deployment detour-system/detour-webhook", "waiting for the webhook", "webhook answering", "detour installed"} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, progress.String())
		}
	}
	d, err := cs.AppsV1().Deployments(Namespace).Get(ctx, WebhookDeployment, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := d.Spec.Template.Spec.Containers[0]
	if c.Image != "registry.example/detour:v1" || !slices.Contains(c.Args, "--agent-image=registry.example/detour:v1") {
		t.Errorf("image not overridden: %s %v", c.Image, c.Args)
	}
	if d.ManagedFields[0].Manager != FieldManager {
		t.Errorf("field manager %q", d.ManagedFields[0].Manager)
	}
	// Applying again (an upgrade) keeps the caBundle the webhook wrote.
	if _, err := Install(ctx, cs, Options{PollInterval: 10 * time.Millisecond}); err != nil {
		t.Fatalf("second Install: %v", err)
	}
}

func TestInstallTimesOutWithPodProblems(t *testing.T) {
	cs := newClientset(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "detour-webhook-1", Namespace: Namespace, Labels: map[string]string{"app.kubernetes.io/name": "detour-webhook"}},
		Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{
			Name: "webhook", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: "not found"}},
		}}},
	})
	_, err := Install(context.Background(), cs, Options{Timeout: 100 * time.Millisecond, PollInterval: 10 * time.Millisecond})
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "ErrImagePull") {
		t.Fatalf("err = %v; want ErrNotReady naming the pod's problem", err)
	}
}

func deployment(ns, name string, ann map[string]string) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Annotations: ann}}},
	}
}

func TestUninstall(t *testing.T) {
	opted := map[string]string{annotations.Inject: annotations.InjectEnabled, annotations.Container: "app"}
	owned := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web-123", Namespace: "shop", OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: "u", Controller: ptr(true)}}},
		Spec:       appsv1.ReplicaSetSpec{Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Annotations: opted}}},
	}
	bare := owned.DeepCopy()
	bare.Name, bare.OwnerReferences = "bare", nil
	replaced := maps.Clone(opted)
	replaced[annotations.Replace] = annotations.ReplaceSpec{By: "alice@laptop", Grace: "1m0s"}.Encode()
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "data"},
		Spec:       appsv1.StatefulSetSpec{Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Annotations: replaced}}},
	}
	cs := newClientset(deployment("shop", "web", opted), deployment("shop", "plain", nil), owned, bare, sts)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go becomeReady(ctx, t, cs)
	if _, err := Install(ctx, cs, Options{PollInterval: 10 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	sum, err := Uninstall(ctx, cs, UninstallOptions{Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Deleted) != 10 {
		t.Errorf("deleted %v, want the 10 installed objects", sum.Deleted)
	}
	if sum.Deleted[0].Kind != "MutatingWebhookConfiguration" {
		t.Errorf("first deleted %s; injection must stop first", sum.Deleted[0])
	}
	want := []ObjectRef{{"Deployment", "shop", "web"}, {"StatefulSet", "data", "db"}, {"ReplicaSet", "shop", "bare"}}
	if !slices.Equal(sum.Unannotated, want) {
		t.Errorf("unannotated %v, want %v", sum.Unannotated, want)
	}
	web, _ := cs.AppsV1().Deployments("shop").Get(ctx, "web", metav1.GetOptions{})
	if _, ok := web.Spec.Template.Annotations[annotations.Inject]; ok || web.Spec.Template.Annotations[annotations.Container] != "app" {
		t.Errorf("web template annotations %v: want inject removed, the rest kept", web.Spec.Template.Annotations)
	}
	db, _ := cs.AppsV1().StatefulSets("data").Get(ctx, "db", metav1.GetOptions{})
	if a := db.Spec.Template.Annotations; a[annotations.Inject] != "" || a[annotations.Replace] != "" || a[annotations.Container] != "app" {
		t.Errorf("replaced db's template annotations %v: want inject and replace removed, the rest kept", a)
	}
	rs, _ := cs.AppsV1().ReplicaSets("shop").Get(ctx, "web-123", metav1.GetOptions{})
	if _, ok := rs.Spec.Template.Annotations[annotations.Inject]; !ok {
		t.Error("a Deployment-owned ReplicaSet was patched")
	}
	// Uninstalling twice is harmless.
	sum, err = Uninstall(ctx, cs, UninstallOptions{})
	if err != nil || len(sum.Deleted) != 0 || len(sum.Unannotated) != 0 {
		t.Errorf("second uninstall: %+v %v", sum, err)
	}
}

func TestCheck(t *testing.T) {
	ctx := context.Background()
	cs := newClientset()
	w, err := Check(ctx, cs, "")
	if err != nil || len(w) != 1 || !strings.Contains(w[0], "not installed") {
		t.Fatalf("not installed: %v %v", w, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	go becomeReady(cctx, t, cs)
	if _, err := Install(cctx, cs, Options{PollInterval: 10 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if w, err := Check(ctx, cs, ""); err != nil || len(w) != 0 {
		t.Fatalf("healthy install: %v %v", w, err)
	}
	// Scaled to zero, with an opted-in pod that came up without the agent.
	d, _ := cs.AppsV1().Deployments(Namespace).Get(ctx, WebhookDeployment, metav1.GetOptions{})
	d.Status.AvailableReplicas = 0
	_, _ = cs.AppsV1().Deployments(Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{})
	_, _ = cs.CoreV1().Pods("shop").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop",
		Annotations: map[string]string{annotations.Inject: annotations.InjectEnabled}}}, metav1.CreateOptions{})
	w, err = Check(ctx, cs, "shop")
	if err != nil || len(w) != 2 || !strings.Contains(w[0], "no available replica") || !strings.Contains(w[1], "shop/web-1") {
		t.Fatalf("warnings %q %v", w, err)
	}
}

// newClientset is a fake clientset whose API server calls a working webhook
// on dry-run pod creation.
func newClientset(objs ...runtime.Object) *fake.Clientset {
	cs := fake.NewClientset(objs...)
	cs.PrependReactor("create", "pods", injectingWebhook)
	return cs
}

// injectingWebhook plays the API server calling a working webhook: a
// dry-run pod comes back with the status annotation.
func injectingWebhook(action k8stesting.Action) (bool, runtime.Object, error) {
	create, ok := action.(k8stesting.CreateActionImpl)
	if !ok || !slices.Contains(create.GetCreateOptions().DryRun, metav1.DryRunAll) {
		return false, nil, nil
	}
	pod := create.GetObject().(*corev1.Pod).DeepCopy()
	pod.Annotations[annotations.Injected] = `{"mode":"redirect"}`
	return true, pod, nil
}

func ptr[T any](v T) *T { return &v }

// TestVerifyInjection: a pod that comes back without the agent is reported,
// and a refused dry run is ErrCannotVerify (Install then skips the check).
func TestVerifyInjection(t *testing.T) {
	ctx := context.Background()
	ok, err := VerifyInjection(ctx, newClientset(), "default")
	if err != nil || !ok {
		t.Errorf("working webhook: ok=%v err=%v", ok, err)
	}
	ok, err = VerifyInjection(ctx, fake.NewClientset(), "default")
	if err != nil || ok {
		t.Errorf("no webhook: ok=%v err=%v, want false without error", ok, err)
	}
	forbidden := fake.NewClientset()
	forbidden.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(corev1.Resource("pods"), "", errors.New("no"))
	})
	if _, err := VerifyInjection(ctx, forbidden, "default"); !errors.Is(err, ErrCannotVerify) {
		t.Errorf("forbidden: %v, want ErrCannotVerify", err)
	}
}

// TestManifestExcludesTheExcludedNamespaces: the webhook configuration's
// namespaceSelector excludes exactly annotations.ExcludedNamespaces, the
// list the webhook checks again and install skips. Before, the manifest
// listed 2, the webhook 4 and install 2: the webhook was called for
// kube-public and kube-node-lease pods (and refused them itself), and
// install warned about opted-in pods there that no webhook would inject.
func TestManifestExcludesTheExcludedNamespaces(t *testing.T) {
	objs, err := objects()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range objs {
		if o.ref.Kind != "MutatingWebhookConfiguration" {
			continue
		}
		var cfg admissionregistrationv1.MutatingWebhookConfiguration
		if err := json.Unmarshal(o.json, &cfg); err != nil {
			t.Fatal(err)
		}
		for _, wh := range cfg.Webhooks {
			for _, e := range wh.NamespaceSelector.MatchExpressions {
				if e.Key == "kubernetes.io/metadata.name" && e.Operator == metav1.LabelSelectorOpNotIn {
					got = append(got, e.Values...)
				}
			}
		}
	}
	if !slices.Equal(got, annotations.ExcludedNamespaces) {
		t.Fatalf("the manifest excludes %q, annotations.ExcludedNamespaces is %q", got, annotations.ExcludedNamespaces)
	}
	for _, ns := range annotations.ExcludedNamespaces {
		if !excludedNamespace(ns) {
			t.Errorf("install does not skip %s", ns)
		}
	}
}

// TestInstallAgentMaxIdle: the option applies the idle reaper's RBAC
// before the webhook and passes --agent-max-idle; installing again
// without it removes both (no reaper, no rights).
func TestInstallAgentMaxIdle(t *testing.T) {
	cs := newClientset()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go becomeReady(ctx, t, cs)
	var progress bytes.Buffer
	sum, err := Install(ctx, cs, Options{Progress: &progress, PollInterval: 10 * time.Millisecond, AgentMaxIdle: 20 * time.Second})
	if err != nil {
		t.Fatalf("Install: %v\n%s", err, progress.String())
	}
	idx := func(kind, name string) int {
		return slices.IndexFunc(sum.Applied, func(r ObjectRef) bool { return r.Kind == kind && r.Name == name })
	}
	if role, dep := idx("ClusterRole", "detour-webhook-idle"), idx("Deployment", WebhookDeployment); role < 0 || idx("ClusterRoleBinding", "detour-webhook-idle") < 0 || role > dep {
		t.Fatalf("applied %v: want the idle RBAC before the Deployment", sum.Applied)
	}
	args := func() []string {
		d, err := cs.AppsV1().Deployments(Namespace).Get(ctx, WebhookDeployment, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return d.Spec.Template.Spec.Containers[0].Args
	}
	if !slices.Contains(args(), "--agent-max-idle=20s") {
		t.Fatalf("webhook args %v lack --agent-max-idle=20s", args())
	}
	if _, err := Install(ctx, cs, Options{Progress: &progress, PollInterval: 10 * time.Millisecond}); err != nil {
		t.Fatalf("second Install: %v", err)
	}
	if _, err := cs.RbacV1().ClusterRoles().Get(ctx, "detour-webhook-idle", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the idle ClusterRole outlived the option: %v", err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Get(ctx, "detour-webhook-idle", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the idle ClusterRoleBinding outlived the option: %v", err)
	}
	if _, err := Install(ctx, cs, Options{AgentMaxIdle: -time.Second}); err == nil {
		t.Error("a negative max idle was accepted")
	}
}
