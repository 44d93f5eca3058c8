package install

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	admissionregistrationv1ac "k8s.io/client-go/applyconfigurations/admissionregistration/v1"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/detour-dev/detour/client/internal/poll"
	"github.com/detour-dev/detour/client/internal/workload"
	"github.com/detour-dev/detour/deploy"
	"github.com/detour-dev/detour/internal/annotations"
)

// FieldManager is the server-side apply field manager of detour's objects.
const FieldManager = "detour"

// Names of the installed objects that Install and Uninstall look at.
const (
	Namespace         = annotations.SystemNamespace
	WebhookDeployment = "detour-webhook"
	WebhookConfig     = "detour-webhook"
	DefaultImage      = "detour.local/detour:dev"
)

// Sentinel errors.
var (
	// ErrNotReady: the webhook did not become ready in time.
	ErrNotReady = errors.New("detour webhook not ready")
	// ErrManifest: an embedded manifest could not be read (a build defect).
	ErrManifest = errors.New("bad embedded manifest")
)

// Options configure Install.
type Options struct {
	// Image replaces DefaultImage for the webhook and the agents it injects.
	Image string
	// Progress receives one line per step; nil discards them.
	Progress io.Writer
	// Timeout bounds the wait for the webhook (default 3 minutes).
	Timeout time.Duration
	// PollInterval is how often the wait looks (default 1 second).
	PollInterval time.Duration
	// ClusterCIDRs are the pod and Service ranges the agents dial for a
	// local process; empty: detected (DetectClusterCIDRs).
	ClusterCIDRs []string
	// AgentMaxIdle, when positive, turns the webhook's idle reaper on
	// (--agent-max-idle) and applies its RBAC (deploy/idle); zero turns it
	// off and deletes that RBAC.
	AgentMaxIdle time.Duration
}

// ObjectRef names a Kubernetes object.
type ObjectRef struct {
	Kind, Namespace, Name string
}

func (r ObjectRef) String() string {
	if r.Namespace == "" {
		return r.Kind + "/" + r.Name
	}
	return r.Kind + " " + r.Namespace + "/" + r.Name
}

// Summary says what Install did.
type Summary struct {
	Applied       []ObjectRef
	Image         string
	ReadyReplicas int32
	Took          time.Duration
}

func (s Summary) String() string {
	return fmt.Sprintf("detour installed: %d objects applied, webhook ready (%d replicas, image %s) in %s",
		len(s.Applied), s.ReadyReplicas, s.Image, s.Took.Round(100*time.Millisecond))
}

func (o *Options) defaults() {
	if o.Image == "" {
		o.Image = DefaultImage
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Timeout == 0 {
		o.Timeout = 3 * time.Minute
	}
	if o.PollInterval == 0 {
		o.PollInterval = time.Second
	}
}

// object is one parsed manifest document.
type object struct {
	ref  ObjectRef
	json []byte
}

// objects parses the embedded base, in apply order.
func objects() ([]object, error) {
	ms, err := deploy.Manifests()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	var out []object
	for _, m := range ms {
		objs, err := parseDocs(m.Name, m.Data)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	return out, nil
}

// idleObjects are the idle reaper's RBAC objects (deploy/idle).
func idleObjects() ([]object, error) { return parseDocs("idle/rbac.yaml", deploy.IdleRBAC) }

// parseDocs reads the objects of one manifest file.
func parseDocs(name string, data []byte) ([]object, error) {
	var out []object
	for _, doc := range strings.Split(string(data), "\n---") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		j, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrManifest, name, err)
		}
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(j, &meta); err != nil || meta.Kind == "" {
			return nil, fmt.Errorf("%w: %s: no kind (%v)", ErrManifest, name, err)
		}
		out = append(out, object{ref: ObjectRef{meta.Kind, meta.Metadata.Namespace, meta.Metadata.Name}, json: j})
	}
	return out, nil
}

// Install applies the embedded manifests and waits for the webhook to be
// ready and trusted by the API server.
func Install(ctx context.Context, client kubernetes.Interface, opts Options) (Summary, error) {
	opts.defaults()
	start := time.Now()
	objs, err := objects()
	if err != nil {
		return Summary{}, err
	}
	sum := Summary{Image: opts.Image}
	if opts.AgentMaxIdle < 0 {
		return sum, fmt.Errorf("agent max idle %s: want 0 (off) or a positive duration", opts.AgentMaxIdle)
	}
	if err := clusterCIDRs(ctx, client, &opts); err != nil {
		return sum, err
	}
	idle, err := idleObjects()
	if err != nil {
		return sum, err
	}
	if opts.AgentMaxIdle > 0 {
		// Before the Deployment: the reaper starts with its rights.
		i := slices.IndexFunc(objs, func(o object) bool { return o.ref.Kind == "Deployment" })
		objs = slices.Insert(objs, max(i, 0), idle...)
	}
	for _, o := range objs {
		if err := apply(ctx, client, o, opts); err != nil {
			return sum, fmt.Errorf("apply %s: %w", o.ref, err)
		}
		fmt.Fprintf(opts.Progress, "applied %s\n", o.ref)
		sum.Applied = append(sum.Applied, o.ref)
	}
	if opts.AgentMaxIdle == 0 {
		// Off: no reaper runs, so it keeps no rights (a re-install without
		// the option after one with it).
		for _, o := range idle {
			if err := remove(ctx, client, o.ref, opts.Progress, &UninstallSummary{}); err != nil {
				return sum, err
			}
		}
	}
	if sum.ReadyReplicas, err = waitReady(ctx, client, opts); err != nil {
		return sum, err
	}
	if err := waitInjecting(ctx, client, opts); err != nil {
		return sum, err
	}
	sum.Took = time.Since(start)
	fmt.Fprintln(opts.Progress, sum)
	return sum, nil
}

var applyOptions = metav1.ApplyOptions{FieldManager: FieldManager, Force: true}

// apply server-side-applies one object through the typed client of its kind.
func apply(ctx context.Context, c kubernetes.Interface, o object, opts Options) error {
	ns := o.ref.Namespace
	switch o.ref.Kind {
	case "Namespace":
		return applyAs(o, func(ac *corev1ac.NamespaceApplyConfiguration) error {
			_, err := c.CoreV1().Namespaces().Apply(ctx, ac, applyOptions)
			return err
		})
	case "ServiceAccount":
		return applyAs(o, func(ac *corev1ac.ServiceAccountApplyConfiguration) error {
			_, err := c.CoreV1().ServiceAccounts(ns).Apply(ctx, ac, applyOptions)
			return err
		})
	case "Service":
		return applyAs(o, func(ac *corev1ac.ServiceApplyConfiguration) error {
			_, err := c.CoreV1().Services(ns).Apply(ctx, ac, applyOptions)
			return err
		})
	case "ClusterRole":
		return applyAs(o, func(ac *rbacv1ac.ClusterRoleApplyConfiguration) error {
			_, err := c.RbacV1().ClusterRoles().Apply(ctx, ac, applyOptions)
			return err
		})
	case "ClusterRoleBinding":
		return applyAs(o, func(ac *rbacv1ac.ClusterRoleBindingApplyConfiguration) error {
			_, err := c.RbacV1().ClusterRoleBindings().Apply(ctx, ac, applyOptions)
			return err
		})
	case "Role":
		return applyAs(o, func(ac *rbacv1ac.RoleApplyConfiguration) error {
			_, err := c.RbacV1().Roles(ns).Apply(ctx, ac, applyOptions)
			return err
		})
	case "RoleBinding":
		return applyAs(o, func(ac *rbacv1ac.RoleBindingApplyConfiguration) error {
			_, err := c.RbacV1().RoleBindings(ns).Apply(ctx, ac, applyOptions)
			return err
		})
	case "Deployment":
		return applyAs(o, func(ac *appsv1ac.DeploymentApplyConfiguration) error {
			setImage(ac, opts.Image)
			setArg(ac, "--cluster-cidrs", strings.Join(opts.ClusterCIDRs, ","))
			if opts.AgentMaxIdle > 0 {
				setArg(ac, "--agent-max-idle", opts.AgentMaxIdle.String())
			}
			_, err := c.AppsV1().Deployments(ns).Apply(ctx, ac, applyOptions)
			return err
		})
	case "PodDisruptionBudget":
		return applyAs(o, func(ac *policyv1ac.PodDisruptionBudgetApplyConfiguration) error {
			_, err := c.PolicyV1().PodDisruptionBudgets(ns).Apply(ctx, ac, applyOptions)
			return err
		})
	case "MutatingWebhookConfiguration":
		return applyAs(o, func(ac *admissionregistrationv1ac.MutatingWebhookConfigurationApplyConfiguration) error {
			_, err := c.AdmissionregistrationV1().MutatingWebhookConfigurations().Apply(ctx, ac, applyOptions)
			return err
		})
	}
	return fmt.Errorf("%w: kind %s has no applier", ErrManifest, o.ref.Kind)
}

func applyAs[T any](o object, apply func(*T) error) error {
	ac := new(T)
	if err := json.Unmarshal(o.json, ac); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrManifest, o.ref, err)
	}
	return apply(ac)
}

// setImage points the webhook container and its --agent-image flag at image.
func setImage(ac *appsv1ac.DeploymentApplyConfiguration, image string) {
	if ac.Spec == nil || ac.Spec.Template == nil || ac.Spec.Template.Spec == nil {
		return
	}
	for i := range ac.Spec.Template.Spec.Containers {
		c := &ac.Spec.Template.Spec.Containers[i]
		c.Image = &image
		for j, a := range c.Args {
			if strings.HasPrefix(a, "--agent-image=") {
				c.Args[j] = "--agent-image=" + image
			}
		}
	}
}

// setArg sets --name=value on the webhook container, replacing an old one.
func setArg(ac *appsv1ac.DeploymentApplyConfiguration, name, value string) {
	if ac.Spec == nil || ac.Spec.Template == nil || ac.Spec.Template.Spec == nil || value == "" {
		return
	}
	for i := range ac.Spec.Template.Spec.Containers {
		c := &ac.Spec.Template.Spec.Containers[i]
		c.Args = slices.DeleteFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, name+"=") })
		c.Args = append(c.Args, name+"="+value)
	}
}

// clusterCIDRs fills opts.ClusterCIDRs from the cluster when not given.
func clusterCIDRs(ctx context.Context, c kubernetes.Interface, opts *Options) error {
	if len(opts.ClusterCIDRs) > 0 {
		return ValidateCIDRs(opts.ClusterCIDRs)
	}
	cidrs, notes, err := DetectClusterCIDRs(ctx, c)
	if err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintf(opts.Progress, "note: %s\n", n)
	}
	opts.ClusterCIDRs = cidrs
	fmt.Fprintf(opts.Progress, "cluster ranges the agents dial for local processes: %s\n", strings.Join(cidrs, ", "))
	return nil
}

// waitReady waits until every webhook replica is updated and available and
// the webhook configuration carries a caBundle.
func waitReady(ctx context.Context, c kubernetes.Interface, opts Options) (int32, error) {
	var ready int32
	msg := ""
	_, timedOut, err := poll.Until(ctx, opts.PollInterval, opts.Timeout, opts.Progress, func(ctx context.Context) (bool, string, error) {
		var err error
		ready, msg, err = webhookReady(ctx, c)
		if err != nil && !apierrors.IsNotFound(err) {
			return false, "", fmt.Errorf("%w: %w", ErrNotReady, err)
		}
		return ready >= 0, "waiting for the webhook: " + msg, nil
	})
	switch {
	case timedOut:
		return 0, fmt.Errorf("%w after %s: %s\n%s\nsee: kubectl -n %s describe deployment %s", ErrNotReady, opts.Timeout, msg,
			podProblems(context.Background(), c), Namespace, WebhookDeployment)
	case err != nil:
		return 0, err
	}
	return ready, nil
}

// webhookReady returns the ready replica count once the webhook is fully
// rolled out and trusted, else -1 and what it is waiting for.
func webhookReady(ctx context.Context, c kubernetes.Interface) (int32, string, error) {
	d, err := c.AppsV1().Deployments(Namespace).Get(ctx, WebhookDeployment, metav1.GetOptions{})
	if err != nil {
		return -1, "deployment not found", err
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	st := d.Status
	if st.ObservedGeneration < d.Generation || st.UpdatedReplicas < want || st.AvailableReplicas < want || st.Replicas > want {
		return -1, fmt.Sprintf("%d/%d replicas updated, %d available", st.UpdatedReplicas, want, st.AvailableReplicas), nil
	}
	mwc, err := c.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, WebhookConfig, metav1.GetOptions{})
	if err != nil {
		return -1, "webhook configuration not found", err
	}
	for _, w := range mwc.Webhooks {
		if len(w.ClientConfig.CABundle) == 0 {
			return -1, fmt.Sprintf("%d/%d replicas available; waiting for the webhook to publish its CA", st.AvailableReplicas, want), nil
		}
	}
	return st.AvailableReplicas, fmt.Sprintf("%d/%d replicas available, CA published", st.AvailableReplicas, want), nil
}

// waitInjecting waits until the API server actually calls the webhook with
// the published CA: a dry-run pod comes back injected. The API server picks
// up a new caBundle a moment after it is written; until then pods would
// start without the agent.
func waitInjecting(ctx context.Context, c kubernetes.Interface, opts Options) error {
	var last error
	_, timedOut, err := poll.Until(ctx, opts.PollInterval, opts.Timeout, nil, func(ctx context.Context) (bool, string, error) {
		ok, err := VerifyInjection(ctx, c, metav1.NamespaceDefault)
		last = err
		switch {
		case errors.Is(err, ErrCannotVerify):
			fmt.Fprintf(opts.Progress, "skipping the injection check: %v\n", err)
			return true, "", nil
		case ok:
			fmt.Fprintln(opts.Progress, "webhook answering: a dry-run pod was injected")
			return true, "", nil
		}
		return false, "", nil
	})
	if timedOut {
		return fmt.Errorf("%w: a dry-run pod in namespace %s was not injected after %s (last error: %v); see kubectl -n %s logs deployment/%s",
			ErrNotReady, metav1.NamespaceDefault, opts.Timeout, last, Namespace, WebhookDeployment)
	}
	return err
}

// ErrCannotVerify: the dry-run pod could not be submitted (no permission to
// create pods, or a policy refused it), so injection was not verified.
var ErrCannotVerify = errors.New("cannot verify injection")

// VerifyInjection submits an opted-in pod to namespace as a server-side dry
// run (nothing is created; webhooks with sideEffects None are called) and
// reports whether it came back with the agent.
func VerifyInjection(ctx context.Context, c kubernetes.Interface, namespace string) (bool, error) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "detour-injection-check-",
			Namespace:    namespace,
			Annotations:  map[string]string{annotations.Inject: annotations.InjectEnabled, annotations.Ports: "8080"},
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "detour.local/injection-check", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}},
	}
	out, err := c.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	switch {
	case apierrors.IsForbidden(err) || apierrors.IsInvalid(err) || apierrors.IsNotFound(err):
		return false, fmt.Errorf("%w: dry-run pod in %s: %w", ErrCannotVerify, namespace, err)
	case err != nil:
		return false, fmt.Errorf("dry-run pod in %s: %w", namespace, err)
	}
	return out.Annotations[annotations.Injected] != "", nil
}

// podProblems describes webhook pods that are not ready, for error messages.
func podProblems(ctx context.Context, c kubernetes.Interface) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	pods, err := c.CoreV1().Pods(Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=detour-webhook"})
	if err != nil {
		return "list webhook pods: " + err.Error()
	}
	if len(pods.Items) == 0 {
		return "no webhook pod exists (kubectl -n " + Namespace + " get events)"
	}
	var b strings.Builder
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "pod %s: %s", p.Name, p.Status.Phase)
		for _, cs := range p.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil {
				fmt.Fprintf(&b, ", %s waiting: %s %s", cs.Name, w.Reason, w.Message)
			}
		}
		b.WriteString("\n")
	}
	return strings.TrimSpace(b.String())
}

// UninstallOptions configure Uninstall.
type UninstallOptions struct {
	// Progress receives one line per step; nil discards them.
	Progress io.Writer
}

// UninstallSummary says what Uninstall did.
type UninstallSummary struct {
	// Unannotated are the workloads whose pod template lost
	// detour.dev/inject; they roll out without the agent.
	Unannotated []ObjectRef
	// Deleted are the installed objects removed (absent ones are skipped).
	Deleted []ObjectRef
}

func (s UninstallSummary) String() string {
	return fmt.Sprintf("detour uninstalled: %d objects deleted, %d workloads rolling out without the agent", len(s.Deleted), len(s.Unannotated))
}

// Uninstall stops injection, removes the opt-in annotation from workloads
// so they roll without the agent, and deletes what Install created (the
// namespace takes the certificate Secret with it).
func Uninstall(ctx context.Context, client kubernetes.Interface, opts UninstallOptions) (UninstallSummary, error) {
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	objs, err := objects()
	if err != nil {
		return UninstallSummary{}, err
	}
	idle, err := idleObjects()
	if err != nil {
		return UninstallSummary{}, err
	}
	objs = append(objs, idle...) // deleted first, below: present or not
	var sum UninstallSummary
	// First the webhook configuration: pods created from here on get no agent.
	for i, o := range objs {
		if o.ref.Kind == "MutatingWebhookConfiguration" {
			if err := remove(ctx, client, o.ref, opts.Progress, &sum); err != nil {
				return sum, err
			}
			objs = slices.Delete(objs, i, i+1)
			break
		}
	}
	if err := unannotateWorkloads(ctx, client, opts.Progress, &sum); err != nil {
		return sum, err
	}
	for i := len(objs) - 1; i >= 0; i-- {
		if err := remove(ctx, client, objs[i].ref, opts.Progress, &sum); err != nil {
			return sum, err
		}
	}
	fmt.Fprintln(opts.Progress, sum)
	return sum, nil
}

func remove(ctx context.Context, c kubernetes.Interface, r ObjectRef, progress io.Writer, sum *UninstallSummary) error {
	bg := metav1.DeletePropagationBackground
	del := metav1.DeleteOptions{PropagationPolicy: &bg}
	var err error
	switch r.Kind {
	case "Namespace":
		err = c.CoreV1().Namespaces().Delete(ctx, r.Name, del)
	case "ServiceAccount":
		err = c.CoreV1().ServiceAccounts(r.Namespace).Delete(ctx, r.Name, del)
	case "Service":
		err = c.CoreV1().Services(r.Namespace).Delete(ctx, r.Name, del)
	case "ClusterRole":
		err = c.RbacV1().ClusterRoles().Delete(ctx, r.Name, del)
	case "ClusterRoleBinding":
		err = c.RbacV1().ClusterRoleBindings().Delete(ctx, r.Name, del)
	case "Role":
		err = c.RbacV1().Roles(r.Namespace).Delete(ctx, r.Name, del)
	case "RoleBinding":
		err = c.RbacV1().RoleBindings(r.Namespace).Delete(ctx, r.Name, del)
	case "Deployment":
		err = c.AppsV1().Deployments(r.Namespace).Delete(ctx, r.Name, del)
	case "PodDisruptionBudget":
		err = c.PolicyV1().PodDisruptionBudgets(r.Namespace).Delete(ctx, r.Name, del)
	case "MutatingWebhookConfiguration":
		err = c.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, r.Name, del)
	default:
		return fmt.Errorf("%w: kind %s has no deleter", ErrManifest, r.Kind)
	}
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("delete %s: %w", r, err)
	}
	fmt.Fprintf(progress, "deleted %s\n", r)
	sum.Deleted = append(sum.Deleted, r)
	return nil
}

// unannotatePatch removes detour.dev/inject from a pod template, and
// detour.dev/replace when it has one (a replaced workload gets its app
// back in the same roll, and is not replaced again if opted in later).
func unannotatePatch(t corev1.PodTemplateSpec) []byte {
	var ops []map[string]string
	for _, a := range []string{annotations.Inject, annotations.Replace} {
		if _, ok := t.Annotations[a]; ok {
			ops = append(ops, map[string]string{"op": "remove", "path": "/spec/template/metadata/annotations/" + strings.ReplaceAll(a, "/", "~1")})
		}
	}
	b, _ := json.Marshal(ops)
	return b
}

// unannotateWorkloads removes detour.dev/inject from the pod templates of
// every workload carrying it, of each kind in the table
// (client/internal/workload). A ReplicaSet owned by a Deployment or a
// Rollout is left to its owner.
func unannotateWorkloads(ctx context.Context, c kubernetes.Interface, progress io.Writer, sum *UninstallSummary) error {
	for _, k := range workload.Kinds {
		ws, _, err := k.List(ctx, c, metav1.NamespaceAll, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, w := range ws {
			if !optedIn(w.Template) || !k.Standalone(w) {
				continue
			}
			if err := k.Patch(ctx, c, w.Namespace, w.Name, types.JSONPatchType, unannotatePatch(w.Template), metav1.PatchOptions{FieldManager: FieldManager}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("remove %s from %s %s/%s: %w", annotations.Inject, strings.ToLower(k.Name), w.Namespace, w.Name, err)
			}
			noted(progress, sum, ObjectRef{k.Name, w.Namespace, w.Name}, k.Rolls)
		}
	}
	return nil
}

func optedIn(t corev1.PodTemplateSpec) bool {
	_, ok := t.Annotations[annotations.Inject]
	return ok
}

func noted(progress io.Writer, sum *UninstallSummary, r ObjectRef, rolls bool) {
	msg := "rolls out without the agent"
	if !rolls {
		msg = "keeps its agent-carrying pods until they are replaced (a bare ReplicaSet does not roll)"
	}
	fmt.Fprintf(progress, "removed %s from %s: %s\n", annotations.Inject, r, msg)
	sum.Unannotated = append(sum.Unannotated, r)
}

// Check reports why pods may start without the agent: detour not installed,
// no webhook replica available, no CA published, and (in namespace, or all
// namespaces when it is "") running pods that opted in but carry no agent.
// An empty result means injection works.
func Check(ctx context.Context, client kubernetes.Interface, namespace string) ([]string, error) {
	var warnings []string
	d, err := client.AppsV1().Deployments(Namespace).Get(ctx, WebhookDeployment, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		warnings = append(warnings, "detour is not installed (no deployment "+Namespace+"/"+WebhookDeployment+"): run `detour install`")
	case err != nil:
		return nil, fmt.Errorf("get webhook deployment: %w", err)
	case d.Status.AvailableReplicas == 0:
		warnings = append(warnings, fmt.Sprintf("the detour webhook has no available replica (%s/%s): pods are created without the agent (failurePolicy: Ignore)", Namespace, WebhookDeployment))
	}
	if mwc, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, WebhookConfig, metav1.GetOptions{}); err == nil {
		for _, w := range mwc.Webhooks {
			if len(w.ClientConfig.CABundle) == 0 {
				warnings = append(warnings, "webhook "+w.Name+" has no caBundle yet: the API server cannot call it, so pods start without the agent")
			}
		}
	} else if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("get webhook configuration: %w", err)
	}
	pods, err := client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	for _, p := range pods.Items {
		if p.Annotations[annotations.Inject] == annotations.InjectEnabled && p.Annotations[annotations.Injected] == "" &&
			p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed && !excludedNamespace(p.Namespace) {
			warnings = append(warnings, fmt.Sprintf("pod %s/%s opted in (%s=%s) but has no agent: the webhook was unavailable or refused it when the pod was created; delete the pod to retry",
				p.Namespace, p.Name, annotations.Inject, annotations.InjectEnabled))
		}
	}
	return warnings, nil
}

func excludedNamespace(ns string) bool {
	return annotations.Excluded(ns) || ns == Namespace
}
