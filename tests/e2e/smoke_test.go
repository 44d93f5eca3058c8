//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"

	"github.com/detour-dev/detour/tests/internal/images"
)

const (
	echoHTTPPort = 8080
	echoTCPPort  = 9000
)

// TestSmoke deploys the echo image and reaches it through a ClusterIP Service
// from the host (over the veth into the cluster's netns) and from another
// pod, at its pod IP from the host, and through a client-go port-forward,
// asserting the echoed bodies.
func TestSmoke(t *testing.T) {
	cfg := restConfig(t)
	cs := clientset(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	ns := createNamespace(ctx, t, cs, "detour-e2e-smoke")
	start := time.Now()
	pod, svc := deployEcho(ctx, t, cs, ns, "echo")
	t.Logf("deployment Running and Ready in %s: pod %s, service %s", time.Since(start).Round(time.Millisecond), pod.Name, svc.Spec.ClusterIP)

	t.Run("ClusterIPFromHost", func(t *testing.T) {
		base := fmt.Sprintf("http://%s", net.JoinHostPort(svc.Spec.ClusterIP, "80"))
		assertHTTPEcho(ctx, t, base, pod.Name, true)
		assertTCPEcho(ctx, t, net.JoinHostPort(svc.Spec.ClusterIP, fmt.Sprint(echoTCPPort)), true)
	})

	t.Run("PodIPFromHost", func(t *testing.T) {
		// The host reaches pod IPs directly (no NAT): pods must route the
		// replies back over the veth.
		assertHTTPEcho(ctx, t, fmt.Sprintf("http://%s", net.JoinHostPort(pod.Status.PodIP, fmt.Sprint(echoHTTPPort))), pod.Name, false)
	})

	t.Run("ClusterIPFromPod", func(t *testing.T) {
		url := fmt.Sprintf("http://%s/from-pod", net.JoinHostPort(svc.Spec.ClusterIP, "80"))
		body := "from-pod-" + randomSuffix(t)
		logs := runClientPod(ctx, t, cs, ns, []string{"post", url, body})
		want := fmt.Sprintf("pod=%s body=%s", pod.Name, body)
		if !strings.Contains(logs, want) {
			t.Fatalf("client pod printed %q, want %q", logs, want)
		}
		t.Logf("pod -> %s: body echoed by pod %s", url, pod.Name)
	})

	t.Run("PortForward", func(t *testing.T) {
		ports := portForward(ctx, t, cfg, cs, pod, echoHTTPPort, echoTCPPort)
		assertHTTPEcho(ctx, t, fmt.Sprintf("http://127.0.0.1:%d", ports[0]), pod.Name, false)
		assertTCPEcho(ctx, t, fmt.Sprintf("127.0.0.1:%d", ports[1]), false)
	})
}

func randomSuffix(t testing.TB) string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// createNamespace creates a fresh namespace and deletes it (waiting until it
// is gone) when the test ends.
func createNamespace(ctx context.Context, t testing.TB, cs kubernetes.Interface, prefix string) string {
	t.Helper()
	name := prefix + "-" + randomSuffix(t)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := cs.CoreV1().Namespaces().Delete(cctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete namespace %s: %v", name, err)
			return
		}
		err := wait.PollUntilContextCancel(cctx, 500*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			_, err := cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
		if err != nil {
			t.Errorf("namespace %s not gone: %v", name, err)
		}
	})
	return name
}

// deployEcho applies a Deployment of the echo image and a ClusterIP Service
// in front of it, and waits for the pod to be Running and Ready.
func deployEcho(ctx context.Context, t testing.TB, cs kubernetes.Interface, ns, name string) (*corev1.Pod, *corev1.Service) {
	t.Helper()
	labels := map[string]string{"app": name}
	one := int32(1)
	nonRoot := true
	uid := int64(images.NonRoot)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken: new(bool),
					Containers: []corev1.Container{{
						Name:            "echo",
						Image:           images.Echo,
						ImagePullPolicy: corev1.PullNever,
						Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{
							FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
						Ports: []corev1.ContainerPort{
							{Name: "http", ContainerPort: echoHTTPPort},
							{Name: "tcp-echo", ContainerPort: echoTCPPort},
						},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromString("http")}},
							PeriodSeconds: 1,
						},
						SecurityContext: &corev1.SecurityContext{RunAsNonRoot: &nonRoot, RunAsUser: &uid, AllowPrivilegeEscalation: new(bool)},
					}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create deployment: %v", err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
				{Name: "tcp-echo", Port: echoTCPPort, TargetPort: intstr.FromInt32(echoTCPPort)},
			},
		},
	}
	svc, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service: %v", err)
	}

	var pod *corev1.Pod
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return false, nil
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.Status.Phase == corev1.PodRunning && podReady(p) {
				pod = p
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("echo pod not Running and Ready: %v\n%s", err, describePods(ctx, cs, ns))
	}
	return pod, svc
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func describePods(ctx context.Context, cs kubernetes.Interface, ns string) string {
	var b strings.Builder
	pods, _ := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if pods != nil {
		for _, p := range pods.Items {
			fmt.Fprintf(&b, "pod %s phase=%s\n", p.Name, p.Status.Phase)
			for _, c := range p.Status.ContainerStatuses {
				fmt.Fprintf(&b, "  container %s ready=%v state=%+v\n", c.Name, c.Ready, c.State)
			}
		}
	}
	evs, _ := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if evs != nil {
		for _, e := range evs.Items {
			fmt.Fprintf(&b, "event %s %s: %s\n", e.InvolvedObject.Name, e.Reason, e.Message)
		}
	}
	return b.String()
}

// assertHTTPEcho POSTs a random body and asserts it comes back from the pod.
// retry covers kube-proxy programming a new Service a moment after rollout.
func assertHTTPEcho(ctx context.Context, t *testing.T, base, podName string, retry bool) {
	t.Helper()
	body := "detour-e2e-" + randomSuffix(t)
	client := &http.Client{Timeout: 5 * time.Second}
	var lastErr error
	deadline := time.Now().Add(30 * time.Second)
	for attempt := 1; ; attempt++ {
		got, pod, err := post(ctx, client, base+"/echo", body)
		if err == nil {
			if got != body {
				t.Fatalf("POST %s echoed %q, want %q", base, got, body)
			}
			if pod != podName {
				t.Fatalf("POST %s answered by pod %q, want %q", base, pod, podName)
			}
			t.Logf("POST %s: body echoed by pod %s (attempt %d)", base, pod, attempt)
			return
		}
		lastErr = err
		if !retry || time.Now().After(deadline) {
			t.Fatalf("POST %s: %v", base, lastErr)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func post(ctx context.Context, c *http.Client, url, body string) (string, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return "", "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("status %s: %s", resp.Status, b)
	}
	return string(b), resp.Header.Get("X-Echo-Pod"), nil
}

// assertTCPEcho writes random bytes on the raw TCP port, half-closes, and
// asserts the same bytes come back.
func assertTCPEcho(ctx context.Context, t *testing.T, addr string, retry bool) {
	t.Helper()
	payload := make([]byte, 64<<10)
	if _, err := rand.Read(payload); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := tcpRoundTrip(ctx, addr, payload)
		if err == nil {
			if !bytes.Equal(got, payload) {
				t.Fatalf("tcp %s echoed %d bytes that differ from the %d sent", addr, len(got), len(payload))
			}
			t.Logf("tcp %s: %d bytes echoed", addr, len(got))
			return
		}
		if !retry || time.Now().After(deadline) {
			t.Fatalf("tcp echo via %s: %v", addr, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func tcpRoundTrip(ctx context.Context, addr string, payload []byte) ([]byte, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	got, rerr := io.ReadAll(c)
	if werr := <-errc; werr != nil {
		return nil, werr
	}
	return got, rerr
}

// portForward forwards local ports (chosen by the kernel) to the pod's
// ports with client-go's tools/portforward, as the detour client does, and
// returns the local ports in order.
func portForward(ctx context.Context, t testing.TB, cfg *rest.Config, cs kubernetes.Interface, pod *corev1.Pod, ports ...int) []uint16 {
	t.Helper()
	return portForwardVia(ctx, t, cfg, cs, pod, false, ports...)
}

// portForwardVia is portForward over plain SPDY, or over WebSocket
// (SPDY's streams in WebSocket frames, kubectl's default since 1.31).
func portForwardVia(ctx context.Context, t testing.TB, cfg *rest.Config, cs kubernetes.Interface, pod *corev1.Pod, websocket bool, ports ...int) []uint16 {
	t.Helper()
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		t.Fatalf("spdy round tripper: %v", err)
	}
	url := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("portforward").URL()
	var dialer httpstream.Dialer = spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, url)
	if websocket {
		if dialer, err = portforward.NewSPDYOverWebsocketDialer(url, cfg); err != nil {
			t.Fatalf("websocket dialer: %v", err)
		}
	}
	specs := make([]string, len(ports))
	for i, p := range ports {
		specs[i] = fmt.Sprintf("0:%d", p)
	}
	stop := make(chan struct{})
	ready := make(chan struct{})
	var out, errOut bytes.Buffer
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, specs, stop, ready, &out, &errOut)
	if err != nil {
		t.Fatalf("port-forward: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- fw.ForwardPorts() }()
	t.Cleanup(func() {
		close(stop)
		if err := <-done; err != nil {
			t.Logf("port-forward ended: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("port-forward failed before ready: %v %s", err, errOut.String())
	case <-ctx.Done():
		t.Fatalf("port-forward not ready: %v", ctx.Err())
	}
	fwd, err := fw.GetPorts()
	if err != nil {
		t.Fatalf("port-forward ports: %v", err)
	}
	local := make([]uint16, len(fwd))
	for i, p := range fwd {
		local[i] = p.Local
	}
	t.Logf("port-forward to %s/%s: %v", pod.Namespace, pod.Name, fwd)
	return local
}

// runClientPod runs the echo image in client mode as a one-shot pod and
// returns its output once it has succeeded; edits, if any, change the pod
// before it is created.
func runClientPod(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string, args []string, edits ...func(*corev1.Pod)) string {
	t.Helper()
	nonRoot := true
	uid := int64(images.NonRoot)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "client-" + randomSuffix(t), Namespace: ns},
		Spec: corev1.PodSpec{
			RestartPolicy:                corev1.RestartPolicyNever,
			AutomountServiceAccountToken: new(bool),
			Containers: []corev1.Container{{
				Name:            "client",
				Image:           images.Echo,
				ImagePullPolicy: corev1.PullNever,
				Args:            args,
				SecurityContext: &corev1.SecurityContext{RunAsNonRoot: &nonRoot, RunAsUser: &uid, AllowPrivilegeEscalation: new(bool)},
			}},
		},
	}
	for _, edit := range edits {
		edit(p)
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create client pod: %v", err)
	}
	var phase corev1.PodPhase
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := cs.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		phase = got.Status.Phase
		return phase == corev1.PodSucceeded || phase == corev1.PodFailed, nil
	})
	raw, lerr := cs.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
	logs := strings.TrimSpace(string(raw))
	if err != nil || phase != corev1.PodSucceeded {
		t.Fatalf("client pod %s: phase %s, wait %v, logs %q (log error %v)\n%s", p.Name, phase, err, logs, lerr, describePods(ctx, cs, ns))
	}
	if lerr != nil {
		t.Fatalf("client pod logs: %v", lerr)
	}
	return logs
}
