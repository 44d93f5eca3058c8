package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/detour-dev/detour/client/internal/resolve"
	"github.com/detour-dev/detour/internal/annotations"
)

func pod(name string, phase corev1.PodPhase, agentReady bool, deleting bool) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Labels: map[string]string{"app": "web"}},
		Status: corev1.PodStatus{Phase: phase, ContainerStatuses: []corev1.ContainerStatus{
			{Name: "app", Ready: true}, {Name: annotations.AgentContainerName, Ready: agentReady}}}}
	if deleting {
		now := metav1.Now()
		p.DeletionTimestamp = &now
		p.Finalizers = []string{"x"}
	}
	return p
}

func webDeployment(replicas int32, annotated bool) (*appsv1.Deployment, resolve.Workload) {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns"},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}}}}}
	if annotated {
		d.Spec.Template.Annotations = map[string]string{annotations.Inject: annotations.InjectEnabled}
	}
	return d, resolve.Workload{Kind: resolve.KindDeployment, Name: "web", Namespace: "ns", Selector: d.Spec.Selector, Template: d.Spec.Template}
}

func TestAgentPodsCountsOnlyRunningPodsWithAReadyAgent(t *testing.T) {
	d, w := webDeployment(3, true)
	cs := fake.NewSimpleClientset(d,
		pod("ready", corev1.PodRunning, true, false),
		pod("agent-starting", corev1.PodRunning, false, false),
		pod("pending", corev1.PodPending, false, false),
		pod("terminating", corev1.PodRunning, true, true),
		pod("done", corev1.PodSucceeded, false, false))
	ready, total, err := AgentPods(context.Background(), cs, w)
	if err != nil {
		t.Fatal(err)
	}
	if len(ready) != 1 || ready[0].Name != "ready" || total != 3 {
		t.Fatalf("ready=%v total=%d, want [ready] and 3 live pods", names(ready), total)
	}
}

func names(pods []corev1.Pod) []string {
	var n []string
	for _, p := range pods {
		n = append(n, p.Name)
	}
	return n
}

func TestSetInjectionAnnotatesTheTemplate(t *testing.T) {
	d, w := webDeployment(1, false)
	cs := fake.NewSimpleClientset(d)
	ctx := context.Background()
	if Injected(w) {
		t.Fatal("fresh workload reported as injected")
	}
	if err := SetInjection(ctx, cs, w, true, "reg/agent:2"); err != nil {
		t.Fatal(err)
	}
	got, _ := cs.AppsV1().Deployments("ns").Get(ctx, "web", metav1.GetOptions{})
	a := got.Spec.Template.Annotations
	if a[annotations.Inject] != annotations.InjectEnabled || a[annotations.AgentImage] != "reg/agent:2" {
		t.Fatalf("annotations after enable: %v", a)
	}
	if err := SetInjection(ctx, cs, w, false, ""); err != nil {
		t.Fatal(err)
	}
	got, _ = cs.AppsV1().Deployments("ns").Get(ctx, "web", metav1.GetOptions{})
	if _, ok := got.Spec.Template.Annotations[annotations.Inject]; ok {
		t.Fatalf("annotation left after disable: %v", got.Spec.Template.Annotations)
	}
}

func TestWaitForAgentsReportsProgressAndTimesOut(t *testing.T) {
	d, w := webDeployment(2, true)
	cs := fake.NewSimpleClientset(d, pod("a", corev1.PodRunning, true, false), pod("b", corev1.PodRunning, false, false))
	var out bytes.Buffer
	_, err := WaitForAgents(context.Background(), cs, w, 700*time.Millisecond, &out)
	if err == nil || !strings.Contains(err.Error(), "agents not ready") || !strings.Contains(err.Error(), "detour install") {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(out.String(), "1 of 2 pods have a ready agent") {
		t.Fatalf("progress: %q", out.String())
	}
	cs = fake.NewSimpleClientset(d, pod("a", corev1.PodRunning, true, false), pod("b", corev1.PodRunning, true, false))
	ready, err := WaitForAgents(context.Background(), cs, w, time.Second, &out)
	if err != nil || len(ready) != 2 {
		t.Fatalf("all ready: %v %v", names(ready), err)
	}
}

func TestCandidatesNamesAMissingNamespace(t *testing.T) {
	_, err := Candidates(context.Background(), fake.NewSimpleClientset(), "ghost")
	if err == nil || !strings.Contains(err.Error(), `namespace "ghost"`) {
		t.Fatalf("err = %v", err)
	}
}

// barrierServer is a loopback API server that answers none of n requests
// until all n are in flight (or 5 s have passed, an error of the test):
// requests sent one after the other never are. body gives each answer
// from the request's path. (client-go's fake clientset answers one
// request at a time, so it cannot show this.)
func barrierServer(t *testing.T, n int, body func(path string) string) kubernetes.Interface {
	t.Helper()
	var inFlight sync.WaitGroup
	inFlight.Add(n)
	all := make(chan struct{})
	go func() { inFlight.Wait(); close(all) }()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inFlight.Done()
		select {
		case <-all:
		case <-time.After(5 * time.Second):
			t.Errorf("GET %s waited 5 s for the other requests: they are sent one after the other", r.URL.Path)
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, body(r.URL.Path))
	}))
	t.Cleanup(srv.Close)
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// TestTargetLookupsGoOutTogether: an intercept's look-ups (the namespace,
// each workload kind, the Services) are asked at once, not one round trip
// after the other.
func TestTargetLookupsGoOutTogether(t *testing.T) {
	// The namespace, Deployments, StatefulSets, ReplicaSets and Services
	// (Rollouts need a dynamic client, which this clientset has not).
	lists := map[string]string{"deployments": "apps/v1 DeploymentList", "statefulsets": "apps/v1 StatefulSetList",
		"replicasets": "apps/v1 ReplicaSetList", "services": "v1 ServiceList"}
	cs := barrierServer(t, len(lists)+1, func(p string) string {
		last := path.Base(p)
		if gvk, ok := lists[last]; ok {
			api, kind, _ := strings.Cut(gvk, " ")
			return fmt.Sprintf(`{"apiVersion":%q,"kind":%q,"metadata":{},"items":[{"metadata":{"name":"web","namespace":"ns"}}]}`, api, kind)
		}
		return fmt.Sprintf(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":%q}}`, last)
	})
	c, svcs, err := CandidatesAndServices(context.Background(), cs, "ns")
	if err != nil || len(c.Workloads) != 3 || len(svcs) != 1 {
		t.Fatalf("got %d workloads, %d services, %v", len(c.Workloads), len(svcs), err)
	}
}

// TestWaitForAgentsAsksTogether: waiting for the agents reads the
// workload (its desired replicas) and its pods at once.
func TestWaitForAgentsAsksTogether(t *testing.T) {
	cs := barrierServer(t, 2, func(p string) string {
		if strings.HasSuffix(p, "/pods") {
			return `{"apiVersion":"v1","kind":"PodList","metadata":{},"items":[{"metadata":{"name":"web-1","namespace":"ns","labels":{"app":"web"}},
				"status":{"phase":"Running","containerStatuses":[{"name":"app","ready":true},{"name":"` + annotations.AgentContainerName + `","ready":true}]}}]}`
		}
		return `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"ns"},"spec":{"replicas":1}}`
	})
	w := resolve.Workload{Kind: resolve.KindDeployment, Name: "web", Namespace: "ns", Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}
	pods, err := WaitForAgents(context.Background(), cs, w, 10*time.Second, io.Discard)
	if err != nil || len(pods) != 1 {
		t.Fatalf("got %d pods, %v", len(pods), err)
	}
}

// TestMissingNamespaceComesFirst: when the namespace is missing, that is
// the error, whatever else failed at the same time.
func TestMissingNamespaceComesFirst(t *testing.T) {
	cs := fake.NewClientset()
	cs.PrependReactor("list", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("list refused")
	})
	_, _, err := CandidatesAndServices(context.Background(), cs, "ghost")
	if err == nil || !strings.Contains(err.Error(), `namespace "ghost"`) {
		t.Fatalf("err = %v, want the missing namespace", err)
	}
	cs.PrependReactor("get", "namespaces", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ghost"}}, nil
	})
	if _, _, err = CandidatesAndServices(context.Background(), cs, "ghost"); err == nil || !strings.Contains(err.Error(), "list refused") {
		t.Fatalf("err = %v, want the list's", err)
	}
}

func TestWaitForEndpointsWaitsForStalePodsToLeave(t *testing.T) {
	ready := true
	slice := func(pods ...string) *discoveryv1.EndpointSlice {
		s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "web-x", Namespace: "ns", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}}}
		for _, p := range pods {
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.0.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: p}})
		}
		return s
	}
	agents := []corev1.Pod{*pod("new-1", corev1.PodRunning, true, false)}
	var out bytes.Buffer
	err := WaitForEndpoints(context.Background(), fake.NewSimpleClientset(slice("new-1", "old-1")), "ns", "web", agents, 600*time.Millisecond, &out)
	if err == nil || !strings.Contains(err.Error(), "pods without the agent") || !strings.Contains(out.String(), "1 of 2 ready endpoints") {
		t.Fatalf("stale endpoint: err=%v out=%q", err, out.String())
	}
	if err := WaitForEndpoints(context.Background(), fake.NewSimpleClientset(slice("new-1")), "ns", "web", agents, time.Second, &out); err != nil {
		t.Fatalf("only agent pods: %v", err)
	}
}
