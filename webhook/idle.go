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

// podIdle is what the reaper learned of one running pod with an idle-reaped
// agent.
type podIdle struct {
	pod      string
	workload WorkloadRef // zero: not a kind the reaper handles
	report   annotations.IdleReport
	err      error // the agent could not be asked
}

// idleWorkloads decides which workloads lose the agent: those all of whose
// running agents ask to be removed. One agent that is busy, or that cannot
// be asked, keeps its workload's annotation: removal rolls every pod of
// the workload, so every agent must agree. Pods of kinds the reaper does
// not handle are ignored. The result is sorted.
func idleWorkloads(pods []podIdle) []WorkloadRef {
	remove := map[WorkloadRef]bool{}
	for _, p := range pods {
		if p.workload == (WorkloadRef{}) {
			continue
		}
		ok, seen := remove[p.workload]
		remove[p.workload] = (ok || !seen) && p.err == nil && p.report.Remove
	}
	var out []WorkloadRef
	for w, ok := range remove {
		if ok {
			out = append(out, w)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// ReapInterval is how often the reaper asks the agents, for agents that
// ask to be removed after maxIdle: a quarter of it, between 5 s and a
// minute. An idle agent is removed between maxIdle and maxIdle plus this.
func ReapInterval(maxIdle time.Duration) time.Duration {
	return min(max(maxIdle/4, 5*time.Second), time.Minute)
}

// IdleReaper removes detour.dev/inject from the pod template of workloads
// whose agents all ask to be removed (annotations.IdleReport), which rolls
// them without the agent. It reads the pods the webhook labelled
// annotations.IdleLabel, asks each running one's agent on its health port,
// and patches what idleWorkloads picks. Every replica of the webhook may
// run one: the patch is conditional (a JSON patch test of the annotation),
// so a second one for the same workload fails harmlessly.
type IdleReaper struct {
	Log    *zap.Logger
	Client kubernetes.Interface
	// Pods lists the labelled pods (an informer's lister).
	Pods corelisters.PodLister
	// Synced says whether Pods has synced; nil: at once.
	Synced   func() bool
	Interval time.Duration
	// Ask asks a pod's agent for its IdleReport; nil: HTTP to the pod IP's
	// health port.
	Ask func(ctx context.Context, pod *corev1.Pod) (annotations.IdleReport, error)
	// OnRemove, when set, is called for each workload un-annotated (metrics).
	OnRemove func(WorkloadRef)
}

// Run reaps every Interval until ctx ends.
func (r *IdleReaper) Run(ctx context.Context) error {
	if r.Synced != nil {
		if err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) { return r.Synced(), nil }); err != nil {
			return nil // ctx ended before the informer synced
		}
	}
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := r.Reap(ctx); err != nil && ctx.Err() == nil {
			r.Log.Warn("idle reaping failed; trying again", zap.Error(err), zap.Duration("in", r.Interval))
		}
	}, r.Interval)
	return nil
}

// Reap runs one round: ask the agents, decide, un-annotate.
func (r *IdleReaper) Reap(ctx context.Context) error {
	pods, err := r.Pods.List(labels.SelectorFromSet(labels.Set{annotations.IdleLabel: annotations.IdleLabelValue}))
	if err != nil {
		return fmt.Errorf("list labelled pods: %w", err)
	}
	states, err := r.survey(ctx, pods)
	if err != nil {
		return err
	}
	var errs []error
	for _, w := range idleWorkloads(states) {
		if err := r.unannotate(ctx, w); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// survey asks every running, not terminating pod's agent, a few at a time,
// and finds its workload.
func (r *IdleReaper) survey(ctx context.Context, pods []*corev1.Pod) ([]podIdle, error) {
	owners := newOwnerCache(r.Client)
	var running []*corev1.Pod
	for _, p := range pods {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && p.Status.PodIP != "" {
			running = append(running, p)
		}
	}
	states := make([]podIdle, len(running))
	for i, p := range running {
		w, err := owners.workload(ctx, p)
		if err != nil {
			return nil, err
		}
		states[i] = podIdle{pod: p.Namespace + "/" + p.Name, workload: w}
	}
	ask := r.Ask
	if ask == nil {
		ask = askAgent
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
			states[i].report, states[i].err = ask(actx, p)
			return nil
		})
	}
	_ = g.Wait()
	return states, nil
}

// askAgent reads the agent's IdleReport from its health port.
func askAgent(ctx context.Context, pod *corev1.Pod) (annotations.IdleReport, error) {
	u := "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(annotations.HealthPort)) + annotations.IdlePath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return annotations.IdleReport{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return annotations.IdleReport{}, fmt.Errorf("ask the agent of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return annotations.IdleReport{}, fmt.Errorf("ask the agent of pod %s/%s: %s (an agent too old to know %s?)", pod.Namespace, pod.Name, resp.Status, annotations.IdlePath)
	}
	var rep annotations.IdleReport
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<10)).Decode(&rep); err != nil {
		return annotations.IdleReport{}, fmt.Errorf("read the idle report of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return rep, nil
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

// idleRemovalPatch removes detour.dev/inject from a pod template, only if
// it is still "enabled" (a JSON patch test), as detour uninstall does.
var idleRemovalPatch = []byte(`[{"op":"test","path":"/spec/template/metadata/annotations/` + escapedInject +
	`","value":"` + annotations.InjectEnabled + `"},{"op":"remove","path":"/spec/template/metadata/annotations/` + escapedInject + `"}]`)

var escapedInject = strings.ReplaceAll(annotations.Inject, "/", "~1")

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

// unannotate removes the opt-in from w's pod template, if it still has it.
func (r *IdleReaper) unannotate(ctx context.Context, w WorkloadRef) error {
	kind, ok := workloadKinds[w.Kind]
	if !ok {
		return nil
	}
	apps := r.Client.AppsV1()
	t, err := kind.template(ctx, apps, w.Namespace, w.Name)
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("get %s: %w", w, err)
	case t.Annotations[annotations.Inject] != annotations.InjectEnabled:
		return nil // already removed (another replica of the webhook, or a user)
	}
	switch err := kind.patch(ctx, apps, w.Namespace, w.Name, idleRemovalPatch, metav1.PatchOptions{FieldManager: fieldManager}); {
	case apierrors.IsNotFound(err), apierrors.IsInvalid(err):
		// Gone, or un-annotated since the get (the test op failed).
		return nil
	case err != nil:
		return fmt.Errorf("remove %s from %s: %w", annotations.Inject, w, err)
	}
	r.Log.Info("agents idle: removed the opt-in; the workload rolls without them", zap.Stringer("workload", w))
	if r.OnRemove != nil {
		r.OnRemove(w)
	}
	return nil
}
