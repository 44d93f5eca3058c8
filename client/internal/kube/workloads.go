package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/detour-dev/detour/client/internal/poll"
	"github.com/detour-dev/detour/client/internal/resolve"
	"github.com/detour-dev/detour/client/internal/workload"
	"github.com/detour-dev/detour/internal/annotations"
)

// Candidates lists the namespace's workloads. A namespace that does not
// exist is an error that says so.
func Candidates(ctx context.Context, cs kubernetes.Interface, namespace string) (resolve.Candidates, error) {
	c, _, err := lookUp(ctx, cs, namespace, false)
	return c, err
}

// CandidatesAndServices lists the namespace's workloads and its Services
// (what an intercept picks its target from), asking for all of them at
// once: each is an API round trip, and a CLI command waits for them all.
// A namespace that does not exist is an error that says so.
func CandidatesAndServices(ctx context.Context, cs kubernetes.Interface, namespace string) (resolve.Candidates, []corev1.Service, error) {
	return lookUp(ctx, cs, namespace, true)
}

func lookUp(ctx context.Context, cs kubernetes.Interface, namespace string, services bool) (resolve.Candidates, []corev1.Service, error) {
	var (
		nsErr, svcErr, wlErr error
		svcs                 []corev1.Service
		c                    resolve.Candidates
		wg                   sync.WaitGroup
	)
	wg.Go(func() { _, nsErr = cs.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{}) })
	if services {
		wg.Go(func() { svcs, svcErr = Services(ctx, cs, namespace) })
	}
	c, wlErr = Workloads(ctx, cs, namespace, labels.Everything())
	wg.Wait()
	// The namespace's absence explains any other failure: it comes first.
	switch {
	case nsErr != nil:
		return resolve.Candidates{}, nil, fmt.Errorf("namespace %q: %w", namespace, nsErr)
	case wlErr != nil:
		return resolve.Candidates{}, nil, wlErr
	case svcErr != nil:
		return resolve.Candidates{}, nil, svcErr
	}
	return c, svcs, nil
}

// Workloads lists the workloads of every kind in the table
// (client/internal/workload) whose labels sel matches, in namespace (""
// for every namespace), every kind at once. A custom kind the cluster does
// not serve is left out, and out of the kinds the candidates name. The
// first kind in the table that fails gives the error.
func Workloads(ctx context.Context, cs kubernetes.Interface, namespace string, sel labels.Selector) (resolve.Candidates, error) {
	type listed struct {
		ws     []resolve.Workload
		served bool
		err    error
	}
	opts := metav1.ListOptions{LabelSelector: sel.String()}
	results := make([]listed, len(workload.Kinds))
	var wg sync.WaitGroup
	for i, k := range workload.Kinds {
		wg.Go(func() {
			r := &results[i]
			r.ws, r.served, r.err = k.List(ctx, cs, namespace, opts)
		})
	}
	wg.Wait()
	var c resolve.Candidates
	for i, r := range results {
		if r.err != nil {
			return resolve.Candidates{}, r.err
		}
		if r.served {
			c.Workloads = append(c.Workloads, r.ws...)
			c.Kinds = append(c.Kinds, workload.Kinds[i].Name)
		}
	}
	return c, nil
}

// Services lists the namespace's Services.
func Services(ctx context.Context, cs kubernetes.Interface, namespace string) ([]corev1.Service, error) {
	l, err := cs.CoreV1().Services(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list services in %q: %w", namespace, err)
	}
	return l.Items, nil
}

// Injected says whether the workload's pod template opts in to the agent.
func Injected(w resolve.Workload) bool {
	return w.Template.Annotations[annotations.Inject] == annotations.InjectEnabled
}

// SetInjection adds (or removes) the opt-in annotation on the workload's
// pod template, with the agent image when given. Deployments and
// StatefulSets then roll their pods; a bare ReplicaSet does not, so its pods
// are deleted for the ReplicaSet to recreate them.
func SetInjection(ctx context.Context, cs kubernetes.Interface, w resolve.Workload, enable bool, image string) error {
	var ann map[string]any
	if enable {
		ann = map[string]any{annotations.Inject: annotations.InjectEnabled}
		if image != "" {
			ann[annotations.AgentImage] = image
		}
	} else {
		ann = map[string]any{annotations.Inject: nil, annotations.AgentImage: nil}
	}
	return patchTemplateAnnotations(ctx, cs, w, ann)
}

// SetAppContainer names the container the agent serves (the
// detour.dev/container annotation on the pod template): the pods roll.
func SetAppContainer(ctx context.Context, cs kubernetes.Interface, w resolve.Workload, container string) error {
	return patchTemplateAnnotations(ctx, cs, w, map[string]any{annotations.Container: container})
}

// patchTemplateAnnotations merges ann (nil values delete) into the
// workload's pod template annotations; a kind that does not roll
// (a bare ReplicaSet) gets its pods deleted.
func patchTemplateAnnotations(ctx context.Context, cs kubernetes.Interface, w resolve.Workload, ann map[string]any) error {
	k, err := workload.ByName(w.Kind)
	if err != nil {
		return fmt.Errorf("%s: %w", w.Ref(), err)
	}
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{"annotations": ann}}}})
	err = k.Patch(ctx, cs, w.Namespace, w.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "detour"})
	if err == nil && !k.Rolls {
		err = deletePods(ctx, cs, w)
	}
	if err != nil {
		return fmt.Errorf("annotate %s in %s: %w", w.Ref(), w.Namespace, err)
	}
	return nil
}

func deletePods(ctx context.Context, cs kubernetes.Interface, w resolve.Workload) error {
	sel, err := w.PodSelector()
	if err != nil {
		return err
	}
	return cs.CoreV1().Pods(w.Namespace).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: sel.String()})
}

// AgentPods returns the workload's pods that are running with a ready
// agent, and how many pods it has in all.
func AgentPods(ctx context.Context, cs kubernetes.Interface, w resolve.Workload) (ready []corev1.Pod, total int, err error) {
	sel, err := w.PodSelector()
	if err != nil {
		return nil, 0, err
	}
	pods, err := cs.CoreV1().Pods(w.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, 0, fmt.Errorf("list pods of %s: %w", w.Ref(), err)
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		total++
		if p.Status.Phase == corev1.PodRunning && agentReady(p) {
			ready = append(ready, p)
		}
	}
	return ready, total, nil
}

func agentReady(p corev1.Pod) bool {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == annotations.AgentContainerName {
			return cs.Ready
		}
	}
	return false
}

// Replicas is the workload's desired pod count, read fresh.
func Replicas(ctx context.Context, cs kubernetes.Interface, w resolve.Workload) (int, error) {
	k, err := workload.ByName(w.Kind)
	if err != nil {
		return 0, err
	}
	return k.Replicas(ctx, cs, w.Namespace, w.Name)
}

// WaitForAgents waits until every desired replica runs a ready agent and no
// pod without one is left, reporting progress on out.
func WaitForAgents(ctx context.Context, cs kubernetes.Interface, w resolve.Workload, timeout time.Duration, out io.Writer) ([]corev1.Pod, error) {
	return waitForPods(ctx, cs, w, timeout, out, "a ready agent", nil)
}

// waitForPods waits until every desired replica runs a ready agent that
// accept (nil: any) takes and no other pod is left; what says in progress
// messages what the pods must have.
func waitForPods(ctx context.Context, cs kubernetes.Interface, w resolve.Workload, timeout time.Duration, out io.Writer, what string, accept func(corev1.Pod) bool) ([]corev1.Pod, error) {
	var ready []corev1.Pod
	r, timedOut, err := poll.Until(ctx, 500*time.Millisecond, timeout, out, func(ctx context.Context) (bool, string, error) {
		// The workload (its desired replicas) and its pods, asked at once.
		var want int
		var wantErr error
		var wg sync.WaitGroup
		wg.Go(func() { want, wantErr = Replicas(ctx, cs, w) })
		var total int
		var err error
		ready, total, err = AgentPods(ctx, cs, w)
		wg.Wait()
		switch {
		case wantErr != nil:
			return false, "", fmt.Errorf("read %s: %w", w.Ref(), wantErr)
		case err != nil:
			return false, "", err
		}
		if accept != nil {
			ready = slices.DeleteFunc(ready, func(p corev1.Pod) bool { return !accept(p) })
		}
		if len(ready) >= want && total == len(ready) && want > 0 {
			return true, "", nil
		}
		return false, fmt.Sprintf("waiting for %s: %d of %d pods have %s (%d pods in all)", w.Ref(), len(ready), want, what, total), nil
	})
	switch {
	case timedOut:
		return nil, fmt.Errorf("%s: agents not ready after %s (%s): check `kubectl -n %s get pods` and that detour is installed (`detour install`): %w",
			w.Ref(), timeout, r.Last, w.Namespace, err)
	case err != nil:
		return nil, err
	}
	return ready, nil
}

// WaitForEndpoints waits until every ready endpoint of the Service is a pod
// with a ready agent, so that traffic sent through the Service right after
// `detour intercept` returns does not land on a pod of the previous rollout.
func WaitForEndpoints(ctx context.Context, cs kubernetes.Interface, namespace, service string, agentPods []corev1.Pod, timeout time.Duration, out io.Writer) error {
	agents := map[string]bool{}
	for _, p := range agentPods {
		agents[p.Name] = true
	}
	_, timedOut, err := poll.Until(ctx, 250*time.Millisecond, timeout, out, func(ctx context.Context) (bool, string, error) {
		slices, err := cs.DiscoveryV1().EndpointSlices(namespace).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
		if err != nil {
			return false, "", fmt.Errorf("list endpoints of service %s: %w", service, err)
		}
		stale, ready := 0, 0
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && !*e.Conditions.Ready {
					continue
				}
				ready++
				if e.TargetRef == nil || !agents[e.TargetRef.Name] {
					stale++
				}
			}
		}
		switch {
		case stale == 0 && ready > 0:
			return true, "", nil
		case ready == 0:
			return false, "", nil // nothing to report until the Service has endpoints
		}
		return false, fmt.Sprintf("waiting for service %s: %d of %d ready endpoints are pods without the agent", service, stale, ready), nil
	})
	if timedOut {
		return fmt.Errorf("service %s still sends traffic to pods without the agent after %s: %w", service, timeout, err)
	}
	return err
}
