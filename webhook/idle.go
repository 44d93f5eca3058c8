package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	appsv1client "k8s.io/client-go/kubernetes/typed/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/detour-dev/detour/internal/annotations"
)

// Workload kinds the idle reaper un-annotates.
const (
	KindDeployment  = "Deployment"
	KindStatefulSet = "StatefulSet"
	KindReplicaSet  = "ReplicaSet"
)

// WorkloadRef names the workload a pod belongs to.
type WorkloadRef struct {
	Kind, Namespace, Name string
}

func (w WorkloadRef) String() string {
	return strings.ToLower(w.Kind) + " " + w.Namespace + "/" + w.Name
}

// podState is what a reaper learned of one running pod it watches.
type podState struct {
	pod      string
	workload WorkloadRef // zero: not a kind the reaper handles
	value    string      // the pod's value of the rule's annotation
	remove   bool        // the agent asks for the annotation's removal
	err      error       // the agent could not be asked
}

// reapTarget is one workload whose annotation goes, and the value its
// template must still have (the pods carry the template's annotations).
type reapTarget struct {
	workload WorkloadRef
	value    string
}

// agreed decides which workloads lose the annotation: those all of whose
// running agents ask for it, with one value. One agent that says no, or
// that cannot be asked, keeps its workload's annotation: removal rolls
// every pod of the workload, so every agent must agree. Pods of kinds the
// reaper does not handle are ignored. The result is sorted.
func agreed(pods []podState) []reapTarget {
	remove := map[WorkloadRef]bool{}
	value := map[WorkloadRef]string{}
	for _, p := range pods {
		if p.workload == (WorkloadRef{}) {
			continue
		}
		ok, seen := remove[p.workload]
		sameValue := !seen || value[p.workload] == p.value
		remove[p.workload] = (ok || !seen) && sameValue && p.err == nil && p.remove
		value[p.workload] = p.value
	}
	var out []reapTarget
	for w, ok := range remove {
		if ok {
			out = append(out, reapTarget{w, value[w]})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].workload.String() < out[j].workload.String() })
	return out
}

// ReapInterval is how often the reaper asks the agents, for agents that
// ask to be removed after maxIdle: a quarter of it, between 5 s and a
// minute. An idle agent is removed between maxIdle and maxIdle plus this.
func ReapInterval(maxIdle time.Duration) time.Duration {
	return min(max(maxIdle/4, 5*time.Second), time.Minute)
}

// ReapRule is what one reaper removes from workloads' pod templates, and
// when: IdleRule (idle agents go away) and ReplaceRule (replaced pods get
// their app back).
type ReapRule struct {
	// Name is the rule in logs ("idle", "replace").
	Name string
	// Label=LabelValue marks the pods the webhook injected for the rule:
	// the selector of the reaper's pod informer.
	Label, LabelValue string
	// Path is where the agents answer on their health port; Decide reads
	// the answer.
	Path   string
	Decide func(body []byte) (remove bool, err error)
	// Annotation is removed from the pod template while it still has the
	// value Value reads from the pod (a JSON patch test first).
	Annotation string
	Value      func(pod *corev1.Pod) string
	// Removed is logged for each workload the annotation went from.
	Removed string
}

// IdleRule: when every agent of a workload has been idle for its
// --max-idle, detour.dev/inject goes, which rolls it without the agent.
var IdleRule = ReapRule{
	Name: "idle", Label: annotations.IdleLabel, LabelValue: annotations.IdleLabelValue,
	Path: annotations.IdlePath,
	Decide: func(body []byte) (bool, error) {
		var r annotations.IdleReport
		err := json.Unmarshal(body, &r)
		return r.Remove, err
	},
	Annotation: annotations.Inject,
	Value:      func(*corev1.Pod) string { return annotations.InjectEnabled },
	Removed:    "agents idle: removed the opt-in; the workload rolls without them",
}

// ReplaceRule: when every agent of a replaced workload has held no
// intercept for its grace period (the workstation went away without a
// leave), detour.dev/replace goes, which rolls the app back in.
var ReplaceRule = ReapRule{
	Name: "replace", Label: annotations.ReplacedLabel, LabelValue: annotations.ReplacedLabelValue,
	Path: annotations.ReplacePath,
	Decide: func(body []byte) (bool, error) {
		var r annotations.ReplaceReport
		err := json.Unmarshal(body, &r)
		return r.Restore, err
	},
	Annotation: annotations.Replace,
	Value:      func(p *corev1.Pod) string { return p.Annotations[annotations.Replace] },
	Removed:    "replaced pods unheld for their grace period: removed detour.dev/replace; the workload rolls with its app back",
}

// Reaper removes Rule.Annotation from the pod template of workloads whose
// agents all ask for it, which rolls them. It reads the pods labelled for
// the rule, asks each running one's agent on its health port, and patches
// what agreed picks. Every replica of the webhook may run one: the patch is
// conditional (a JSON patch test of the annotation's value), so a second
// one for the same workload fails harmlessly.
type Reaper struct {
	Log    *zap.Logger
	Client kubernetes.Interface
	Rule   ReapRule
	// Pods lists the labelled pods (an informer's lister).
	Pods corelisters.PodLister
	// Synced says whether Pods has synced; nil: at once.
	Synced   func() bool
	Interval time.Duration
	// Ask asks a pod's agent whether the annotation should go; nil: HTTP
	// to the pod IP's health port, read with Rule.Decide.
	Ask func(ctx context.Context, pod *corev1.Pod) (bool, error)
	// OnRemove, when set, is called for each workload patched (metrics).
	OnRemove func(WorkloadRef)
}

// Run reaps every Interval until ctx ends.
func (r *Reaper) Run(ctx context.Context) error {
	if r.Synced != nil {
		if err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) { return r.Synced(), nil }); err != nil {
			return nil // ctx ended before the informer synced
		}
	}
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := r.Reap(ctx); err != nil && ctx.Err() == nil {
			r.Log.Warn("reaping failed; trying again", zap.String("rule", r.Rule.Name), zap.Error(err), zap.Duration("in", r.Interval))
		}
	}, r.Interval)
	return nil
}

// Reap runs one round: ask the agents, decide, patch.
func (r *Reaper) Reap(ctx context.Context) error {
	pods, err := r.Pods.List(labels.SelectorFromSet(labels.Set{r.Rule.Label: r.Rule.LabelValue}))
	if err != nil {
		return fmt.Errorf("list labelled pods: %w", err)
	}
	states, err := r.survey(ctx, pods)
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range agreed(states) {
		if err := r.unannotate(ctx, t); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// survey asks every running, not terminating pod's agent, a few at a time,
// and finds its workload.
func (r *Reaper) survey(ctx context.Context, pods []*corev1.Pod) ([]podState, error) {
	owners := newOwnerCache(r.Client)
	var running []*corev1.Pod
	for _, p := range pods {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && p.Status.PodIP != "" {
			running = append(running, p)
		}
	}
	states := make([]podState, len(running))
	for i, p := range running {
		w, err := owners.workload(ctx, p)
		if err != nil {
			return nil, err
		}
		states[i] = podState{pod: p.Namespace + "/" + p.Name, workload: w, value: r.Rule.Value(p)}
	}
	ask := r.Ask
	if ask == nil {
		ask = func(ctx context.Context, p *corev1.Pod) (bool, error) { return askAgent(ctx, p, r.Rule) }
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, p := range running {
		if states[i].workload == (WorkloadRef{}) {
			continue
		}
		g.Go(func() error {
			actx, cancel := context.WithTimeout(gctx, 2*time.Second)
			defer cancel()
			states[i].remove, states[i].err = ask(actx, p)
			return nil
		})
	}
	_ = g.Wait()
	return states, nil
}

// askAgent reads the agent's report on rule.Path from its health port.
func askAgent(ctx context.Context, pod *corev1.Pod, rule ReapRule) (bool, error) {
	u := "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(annotations.HealthPort)) + rule.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, fmt.Errorf("ask the agent of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("ask the agent of pod %s/%s: %s (an agent too old to know %s?)", pod.Namespace, pod.Name, resp.Status, rule.Path)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err != nil {
		return false, fmt.Errorf("read the %s report of pod %s/%s: %w", rule.Name, pod.Namespace, pod.Name, err)
	}
	remove, err := rule.Decide(body)
	if err != nil {
		return false, fmt.Errorf("read the %s report of pod %s/%s: %w", rule.Name, pod.Namespace, pod.Name, err)
	}
	return remove, nil
}

// ownerCache resolves pods to workloads, reading each ReplicaSet once per
// round.
type ownerCache struct {
	client kubernetes.Interface
	rs     map[types.NamespacedName]WorkloadRef
}

func newOwnerCache(c kubernetes.Interface) *ownerCache {
	return &ownerCache{client: c, rs: map[types.NamespacedName]WorkloadRef{}}
}

// workload is the Deployment, StatefulSet or bare ReplicaSet that controls
// pod, or zero.
func (c *ownerCache) workload(ctx context.Context, pod *corev1.Pod) (WorkloadRef, error) {
	ref := metav1.GetControllerOf(pod)
	if ref == nil {
		return WorkloadRef{}, nil
	}
	switch ref.Kind {
	case KindStatefulSet:
		return WorkloadRef{KindStatefulSet, pod.Namespace, ref.Name}, nil
	case KindReplicaSet:
	default:
		return WorkloadRef{}, nil
	}
	key := types.NamespacedName{Namespace: pod.Namespace, Name: ref.Name}
	if w, ok := c.rs[key]; ok {
		return w, nil
	}
	rs, err := c.client.AppsV1().ReplicaSets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return WorkloadRef{}, nil
	case err != nil:
		return WorkloadRef{}, fmt.Errorf("get replicaset %s: %w", key, err)
	}
	w := WorkloadRef{KindReplicaSet, pod.Namespace, rs.Name}
	if owner := metav1.GetControllerOf(rs); owner != nil {
		w = WorkloadRef{}
		if owner.Kind == KindDeployment {
			w = WorkloadRef{KindDeployment, pod.Namespace, owner.Name}
		}
	}
	c.rs[key] = w
	return w, nil
}

// fieldManager is the webhook's name in managedFields.
const fieldManager = "detour-webhook"

// kindOps is what the reaper does to one kind of workload: read its pod
// template, patch it.
type kindOps struct {
	template func(ctx context.Context, apps appsv1client.AppsV1Interface, ns, name string) (*corev1.PodTemplateSpec, error)
	patch    func(ctx context.Context, apps appsv1client.AppsV1Interface, ns, name string, data []byte, opts metav1.PatchOptions) error
}

// getPatcher is the part of a typed workload client the reaper uses.
type getPatcher[T any] interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (T, error)
}

func opsOf[T any](client func(appsv1client.AppsV1Interface, string) getPatcher[T], template func(T) *corev1.PodTemplateSpec) kindOps {
	return kindOps{
		template: func(ctx context.Context, apps appsv1client.AppsV1Interface, ns, name string) (*corev1.PodTemplateSpec, error) {
			obj, err := client(apps, ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			return template(obj), nil
		},
		patch: func(ctx context.Context, apps appsv1client.AppsV1Interface, ns, name string, data []byte, opts metav1.PatchOptions) error {
			_, err := client(apps, ns).Patch(ctx, name, types.JSONPatchType, data, opts)
			return err
		},
	}
}

// workloadKinds: a new kind is one entry (and its RBAC in deploy/idle).
var workloadKinds = map[string]kindOps{
	KindDeployment: opsOf(func(a appsv1client.AppsV1Interface, ns string) getPatcher[*appsv1.Deployment] {
		return a.Deployments(ns)
	},
		func(d *appsv1.Deployment) *corev1.PodTemplateSpec { return &d.Spec.Template }),
	KindStatefulSet: opsOf(func(a appsv1client.AppsV1Interface, ns string) getPatcher[*appsv1.StatefulSet] {
		return a.StatefulSets(ns)
	},
		func(s *appsv1.StatefulSet) *corev1.PodTemplateSpec { return &s.Spec.Template }),
	KindReplicaSet: opsOf(func(a appsv1client.AppsV1Interface, ns string) getPatcher[*appsv1.ReplicaSet] {
		return a.ReplicaSets(ns)
	},
		func(rs *appsv1.ReplicaSet) *corev1.PodTemplateSpec { return &rs.Spec.Template }),
}

// unannotate removes the rule's annotation from t's pod template, if it
// still has t's value.
func (r *Reaper) unannotate(ctx context.Context, t reapTarget) error {
	w, ann := t.workload, r.Rule.Annotation
	kind, ok := workloadKinds[w.Kind]
	if !ok {
		return nil
	}
	apps := r.Client.AppsV1()
	tmpl, err := kind.template(ctx, apps, w.Namespace, w.Name)
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("get %s: %w", w, err)
	case tmpl.Annotations[ann] != t.value:
		return nil // already removed or changed (another replica of the webhook, or a user)
	}
	switch err := kind.patch(ctx, apps, w.Namespace, w.Name, annotations.TemplateRemovalPatch(ann, t.value), metav1.PatchOptions{FieldManager: fieldManager}); {
	case apierrors.IsNotFound(err), apierrors.IsInvalid(err):
		// Gone, or changed since the get (the test op failed).
		return nil
	case err != nil:
		return fmt.Errorf("remove %s from %s: %w", ann, w, err)
	}
	r.Log.Info(r.Rule.Removed, zap.Stringer("workload", w))
	if r.OnRemove != nil {
		r.OnRemove(w)
	}
	return nil
}
