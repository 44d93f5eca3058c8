//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/detour-dev/detour/client/install"
	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/tests/internal/images"
)

// TestWebhook installs detour into the cluster with client/install (as
// `detour install` does) and checks injection end to end: an annotated
// Deployment gets the agent in port-rename mode (named targetPort, no init
// container) and in redirect mode (numeric targetPort, detour-init), and
// serves traffic through the agent's passthrough; an unannotated one is
// untouched; with the webhook scaled to zero pods are still created, without
// the agent, and install.Check warns; after a forced certificate rotation
// admissions work again; uninstall removes the opt-in from workloads.
func TestWebhook(t *testing.T) {
	cfg := restConfig(t)
	cs := clientset(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	start := time.Now()
	sum, err := install.Install(ctx, cs, install.Options{Progress: logWriter(t), Timeout: 4 * time.Minute})
	if err != nil {
		t.Fatalf("install: %v\n%s", err, describePods(ctx, cs, install.Namespace))
	}
	t.Logf("%s (took %s)", sum, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() { uninstallAndWait(t, cs) })

	t.Run("RenameMode", func(t *testing.T) {
		ns := createNamespace(ctx, t, cs, "detour-e2e-rename")
		pod := deployOptedInEcho(ctx, t, cs, ns, "echo", intstr.FromString("http"), true)
		assertInjected(t, pod, annotations.ModeRename)
		if len(pod.Spec.InitContainers) != 0 {
			t.Errorf("rename mode pod has init containers %v", pod.Spec.InitContainers)
		}
		assertEndpointPort(ctx, t, cs, ns, "echo", annotations.FirstListenPort)
		assertTrafficThroughAgent(ctx, t, cfg, cs, ns, pod)
	})

	t.Run("RedirectMode", func(t *testing.T) {
		ns := createNamespace(ctx, t, cs, "detour-e2e-redirect")
		pod := deployOptedInEcho(ctx, t, cs, ns, "echo", intstr.FromInt32(echoHTTPPort), true)
		assertInjected(t, pod, annotations.ModeRedirect)
		if len(pod.Spec.InitContainers) != 1 || pod.Spec.InitContainers[0].Name != annotations.InitContainerName {
			t.Errorf("redirect mode pod init containers %v, want %s", pod.Spec.InitContainers, annotations.InitContainerName)
		}
		assertTrafficThroughAgent(ctx, t, cfg, cs, ns, pod)
	})

	t.Run("Unannotated", func(t *testing.T) {
		ns := createNamespace(ctx, t, cs, "detour-e2e-plain")
		pod, _ := deployEcho(ctx, t, cs, ns, "echo")
		if len(pod.Spec.Containers) != 1 || len(pod.Spec.InitContainers) != 0 || pod.Annotations[annotations.Injected] != "" {
			t.Errorf("unannotated pod was changed: containers %d, init %d, annotations %v", len(pod.Spec.Containers), len(pod.Spec.InitContainers), pod.Annotations)
		}
	})

	t.Run("WebhookDown", func(t *testing.T) {
		scaleWebhook(ctx, t, cs, 0)
		ns := createNamespace(ctx, t, cs, "detour-e2e-down")
		pod := deployOptedInEcho(ctx, t, cs, ns, "echo", intstr.FromString("http"), false)
		if hasAgent(pod) {
			t.Fatalf("pod %s got the agent with the webhook scaled to zero", pod.Name)
		}
		warnings, err := install.Check(ctx, cs, ns)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("install.Check: %q", warnings)
		if !containsAll(strings.Join(warnings, "\n"), "no available replica", ns+"/"+pod.Name) {
			t.Errorf("install.Check did not warn about the missing webhook and the agent-less pod: %q", warnings)
		}
		// Re-applying restores the replicas: install is idempotent.
		if _, err := install.Install(ctx, cs, install.Options{Progress: logWriter(t), Timeout: 4 * time.Minute}); err != nil {
			t.Fatalf("re-install: %v", err)
		}
	})

	t.Run("CertRotation", func(t *testing.T) {
		rotateCertificate(ctx, t, cfg, cs)
		// The API server picks up the new caBundle a moment after it is
		// written (a forced rotation, unlike a scheduled one, replaces the
		// CA at once): wait until a dry-run pod is injected again.
		start := time.Now()
		err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			ok, err := install.VerifyInjection(ctx, cs, metav1.NamespaceDefault)
			return ok, err
		})
		if err != nil {
			t.Fatalf("admissions not injecting after rotation: %v", err)
		}
		t.Logf("admissions injecting again %s after every replica served the new certificate", time.Since(start).Round(time.Millisecond))
		ns := createNamespace(ctx, t, cs, "detour-e2e-rotated")
		pod := deployOptedInEcho(ctx, t, cs, ns, "echo", intstr.FromString("http"), true)
		assertInjected(t, pod, annotations.ModeRename)
		assertTrafficThroughAgent(ctx, t, cfg, cs, ns, pod)
	})

	t.Run("Footprint", func(t *testing.T) {
		// Resident memory of each webhook replica after the admissions
		// above; the target is 40 MiB.
		pods, err := cs.CoreV1().Pods(install.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=detour-webhook"})
		if err != nil || len(pods.Items) == 0 {
			t.Fatalf("webhook pods: %v", err)
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			url := fmt.Sprintf("http://127.0.0.1:%d/metrics", portForward(ctx, t, cfg, cs, p, 8081)[0])
			rss, err := scrape(ctx, url, "process_resident_memory_bytes")
			if err != nil || rss == 0 {
				t.Fatalf("%s: no process_resident_memory_bytes: %v", p.Name, err)
			}
			t.Logf("webhook %s RSS %.1f MiB", p.Name, rss/(1<<20))
			if rss > 40<<20 {
				t.Errorf("webhook %s RSS %.1f MiB, over the 40 MiB target", p.Name, rss/(1<<20))
			}
		}
	})

	t.Run("Uninstall", func(t *testing.T) {
		ns := createNamespace(ctx, t, cs, "detour-e2e-uninstall")
		deployOptedInEcho(ctx, t, cs, ns, "echo", intstr.FromString("http"), true)
		s, err := install.Uninstall(ctx, cs, install.UninstallOptions{Progress: logWriter(t)})
		if err != nil {
			t.Fatal(err)
		}
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, still := d.Spec.Template.Annotations[annotations.Inject]; still {
			t.Errorf("uninstall left %s on deployment %s/echo (summary %s)", annotations.Inject, ns, s)
		}
		// The rollout replaces the pod with one without the agent.
		err = wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
			pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=echo"})
			if err != nil || len(pods.Items) != 1 {
				return false, nil
			}
			p := &pods.Items[0]
			return !hasAgent(p) && p.Status.Phase == corev1.PodRunning && podReady(p), nil
		})
		if err != nil {
			t.Fatalf("deployment did not roll to an agent-less pod: %v\n%s", err, describePods(ctx, cs, ns))
		}
	})
}

// logWriter turns install's progress lines into test log lines.
func logWriter(t *testing.T) io.Writer {
	r, w := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s := bufio.NewScanner(r)
		for s.Scan() {
			t.Log(s.Text())
		}
	}()
	t.Cleanup(func() { w.Close(); <-done })
	return w
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func hasAgent(p *corev1.Pod) bool {
	for _, c := range p.Spec.Containers {
		if c.Name == annotations.AgentContainerName {
			return true
		}
	}
	return false
}

// deployOptedInEcho deploys the echo image with detour.dev/inject=enabled on
// its pod template and a Service on port 80 → targetPort, and returns its
// Running pod (Ready too when wantReady).
func deployOptedInEcho(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name string, targetPort intstr.IntOrString, wantReady bool) *corev1.Pod {
	t.Helper()
	labels := map[string]string{"app": name}
	one := int32(1)
	uid := int64(images.NonRoot)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{annotations.Inject: annotations.InjectEnabled}},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken:  new(bool),
					TerminationGracePeriodSeconds: new(int64),
					Containers: []corev1.Container{{
						Name:            "echo",
						Image:           images.Echo,
						ImagePullPolicy: corev1.PullNever,
						Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{
							FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: echoHTTPPort}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromString("http")}},
							PeriodSeconds: 1,
						},
						SecurityContext: &corev1.SecurityContext{RunAsNonRoot: new(true), RunAsUser: &uid, AllowPrivilegeEscalation: new(bool)},
					}},
				},
			},
		},
	}
	// The Service first, as `kubectl apply` of a directory usually does: the
	// webhook picks ports from the Services that select the pod.
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: targetPort}},
		},
	}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create service: %v", err)
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create deployment: %v", err)
	}
	var pod *corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return false, nil
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.Status.Phase == corev1.PodRunning && (!wantReady || podReady(p)) {
				pod = p
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("pod of %s/%s not Running and Ready: %v\n%s", ns, name, err, describePods(ctx, cs, ns))
	}
	return pod
}

func assertInjected(t *testing.T, pod *corev1.Pod, mode annotations.Mode) {
	t.Helper()
	if !hasAgent(pod) {
		t.Fatalf("pod %s has no %s container: %v", pod.Name, annotations.AgentContainerName, pod.Spec.Containers)
	}
	st, err := annotations.ParseStatus(pod.Annotations[annotations.Injected])
	if err != nil {
		t.Fatalf("pod %s: %v", pod.Name, err)
	}
	if st.Mode != mode || st.Container != "echo" {
		t.Errorf("pod %s injected as %+v, want mode %s on container echo", pod.Name, st, mode)
	}
	t.Logf("pod %s injected: %s", pod.Name, pod.Annotations[annotations.Injected])
}

// assertEndpointPort checks that the Service now lands on the agent's port.
func assertEndpointPort(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, svc string, want int32) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		slices, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + svc})
		if err != nil {
			return false, nil
		}
		for _, s := range slices.Items {
			for _, p := range s.Ports {
				if p.Port != nil && *p.Port == want && len(s.Endpoints) > 0 {
					return true, nil
				}
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("service %s/%s has no endpoint on the agent port %d", ns, svc, want)
	}
}

// assertTrafficThroughAgent sends HTTP through the Service's ClusterIP and
// checks the app answered and the agent counted the connection as passed to
// the app. The agent's metrics are read through a port-forward: the host
// has no route back from pod IPs.
func assertTrafficThroughAgent(ctx context.Context, t *testing.T, cfg *rest.Config, cs kubernetes.Interface, ns string, pod *corev1.Pod) {
	t.Helper()
	svc, err := cs.CoreV1().Services(ns).Get(ctx, "echo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	metrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", portForward(ctx, t, cfg, cs, pod, annotations.MetricsPort)[0])
	const series = `detour_agent_connections_total{route="app"}`
	before, err := scrape(ctx, metrics, series)
	if err != nil {
		t.Fatalf("agent metrics: %v", err)
	}
	assertHTTPEcho(ctx, t, "http://"+net.JoinHostPort(svc.Spec.ClusterIP, "80"), pod.Name, true)
	after, err := scrape(ctx, metrics, series)
	if err != nil {
		t.Fatalf("agent metrics: %v", err)
	}
	if after <= before {
		t.Errorf("agent app connections %v → %v: the request did not pass through the agent", before, after)
	}
	t.Logf("agent passed %v connection(s) to the app", after-before)
}

// scrape returns the value of one sample line of a Prometheus endpoint (0
// when the series is absent).
func scrape(ctx context.Context, url, series string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	return 0, nil
}

func scaleWebhook(ctx context.Context, t *testing.T, cs kubernetes.Interface, replicas int32) {
	t.Helper()
	patch := []byte(fmt.Sprintf(`{"spec":{"replicas":%d}}`, replicas))
	if _, err := cs.AppsV1().Deployments(install.Namespace).Patch(ctx, install.WebhookDeployment, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("scale webhook: %v", err)
	}
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(install.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=detour-webhook"})
		return err == nil && int32(len(pods.Items)) == replicas, nil
	})
	if err != nil {
		t.Fatalf("webhook not at %d pods: %v\n%s", replicas, err, describePods(ctx, cs, install.Namespace))
	}
}

// rotateCertificate deletes the webhook's certificate Secret, then waits
// until a replica has made a new CA and certificate, the caBundle trusts it,
// and every replica serves it.
func rotateCertificate(ctx context.Context, t *testing.T, cfg *rest.Config, cs kubernetes.Interface) {
	t.Helper()
	secrets := cs.CoreV1().Secrets(install.Namespace)
	old, err := secrets.Get(ctx, "detour-webhook-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("certificate secret: %v", err)
	}
	if err := secrets.Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var leaf *x509.Certificate
	err = wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		s, err := secrets.Get(ctx, old.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || err != nil || bytes.Equal(s.Data["ca.crt"], old.Data["ca.crt"]) {
			return false, nil
		}
		mwc, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, install.WebhookConfig, metav1.GetOptions{})
		if err != nil || !bytes.Equal(mwc.Webhooks[0].ClientConfig.CABundle, s.Data["ca.crt"]) {
			return false, nil
		}
		block, _ := pem.Decode(s.Data["tls.crt"])
		if block == nil {
			return false, nil
		}
		leaf, err = x509.ParseCertificate(block.Bytes)
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("no new certificate published after deleting the secret: %v", err)
	}
	want := float64(leaf.NotAfter.Unix())
	pods, err := cs.CoreV1().Pods(install.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=detour-webhook"})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("webhook pods: %v (%d)", err, len(pods.Items))
	}
	var urls []string
	for i := range pods.Items {
		urls = append(urls, fmt.Sprintf("http://127.0.0.1:%d/metrics", portForward(ctx, t, cfg, cs, &pods.Items[i], 8081)[0]))
	}
	err = wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, u := range urls {
			if v, err := scrape(ctx, u, "detour_webhook_certificate_expiry_timestamp_seconds"); err != nil || v != want {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("not every webhook replica serves the new certificate: %v", err)
	}
	t.Logf("certificate rotated: serial %s, every replica serving it", leaf.SerialNumber)
}

// uninstallAndWait removes detour and waits for its namespace to go, so the
// next run installs into a clean cluster.
func uninstallAndWait(t *testing.T, cs kubernetes.Interface) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := install.Uninstall(ctx, cs, install.UninstallOptions{}); err != nil {
		t.Errorf("uninstall: %v", err)
		return
	}
	err := wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().Namespaces().Get(ctx, install.Namespace, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Errorf("namespace %s not gone after uninstall: %v", install.Namespace, err)
	}
}
