//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/tests/internal/images"
)

// stoppableServerEnv makes the test binary a local HTTP server that
// answers "workstation" (printing its port first): a process of its own,
// which the test can SIGSTOP as a debugger's breakpoint would.
const stoppableServerEnv = "DETOUR_E2E_STOPPABLE_SERVER"

func init() {
	if os.Getenv(stoppableServerEnv) == "" {
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "workstation")
	}), ReadHeaderTimeout: 5 * time.Second}
	srv.Serve(ln)
	os.Exit(0)
}

// startStoppableServer runs the test binary as a local server and returns
// its process and port.
func startStoppableServer(t *testing.T) (*os.Process, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), stoppableServerEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("local server: %v", err)
	}
	port, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("local server printed %q", line)
	}
	return cmd.Process, port
}

// TestProbesReachTheAppDuringIntercept (issue 12, item 5): redirect mode
// (numeric targetPort), a tcp intercept, and the local process stopped at a
// "breakpoint" (SIGSTOP) for several times the liveness probe's
// failureThreshold × periodSeconds. The kubelet's probes must keep reaching
// the app: no restart, the pod stays Ready, while the Service's traffic
// still waits on the stopped workstation.
func TestProbesReachTheAppDuringIntercept(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cfg := restConfig(t)
	cs := clientset(t, cfg)
	u := newUser(t)
	u.must("install", "--image", images.Detour)
	ns := createNamespace(ctx, t, cs, "probes")
	const period, threshold = 1, 2
	svc := deployProbed(ctx, t, cs, ns, "probed", period, threshold)
	url := fmt.Sprintf("http://%s:80/", svc.Spec.ClusterIP)
	eventually(t, time.Minute, "the Service answers before any intercept", func() bool { return strings.HasPrefix(who(url), "hello from probed-") })

	proc, local := startStoppableServer(t)
	u.must("intercept", "probed", "-n", ns, "--port", fmt.Sprintf("%d:http", local), "--mechanism", "tcp")
	if !waitForSteady(t, url, "workstation", 20, kubeProxyLag) {
		t.Fatalf("the intercept never took the traffic:\n%s", agentLogs(ctx, cs, ns, "app=probed"))
	}
	pod := probedPod(ctx, t, cs, ns)
	st, ok := annotations.ParseStatus(pod.Annotations[annotations.Injected])
	if ok != nil || st.Mode != annotations.ModeRedirect {
		t.Fatalf("pod %s: injection status %q, want redirect mode", pod.Name, pod.Annotations[annotations.Injected])
	}
	before := appRestarts(pod)
	t.Logf("pod %s: redirect mode, liveness probe %+v, app restarts %d", pod.Name, pod.Spec.Containers[0].LivenessProbe.ProbeHandler, before)

	if err := proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	// The intercept still holds: a request waits on the stopped process.
	if got := who(url); !strings.HasPrefix(got, "error:") {
		t.Fatalf("with the local process stopped the Service answered %q; the intercept should hold it", got)
	}
	hold := 6 * period * threshold * time.Second
	if hold < 15*time.Second {
		hold = 15 * time.Second
	}
	for time.Since(stopped) < hold {
		time.Sleep(time.Second)
		p := probedPod(ctx, t, cs, ns)
		if r := appRestarts(p); r != before || !podReady(p) {
			t.Fatalf("%s after SIGSTOP: app restarts %d (was %d), ready %v; the kubelet's probes reached the stopped workstation\n%s",
				time.Since(stopped).Round(time.Second), r, before, podReady(p), describePods(ctx, cs, ns))
		}
	}
	t.Logf("local process stopped for %s (liveness: %d × %d s): no restart, pod Ready", hold, threshold, period)
	if err := proc.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the workstation answers again after SIGCONT", func() bool { return who(url) == "workstation" })
	u.must("leave", "probed-"+ns)
}

func appRestarts(p *corev1.Pod) int32 {
	for _, c := range p.Status.ContainerStatuses {
		if c.Name == "echo" {
			return c.RestartCount
		}
	}
	return -1
}

func probedPod(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string) *corev1.Pod {
	t.Helper()
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=probed"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range pods.Items {
		if p := &pods.Items[i]; p.DeletionTimestamp == nil && hasAgent(p) {
			return p
		}
	}
	t.Fatalf("no injected probed pod:\n%s", describePods(ctx, cs, ns))
	return nil
}

// deployProbed is a 1-replica echo Deployment with liveness and readiness
// probes on the app port by number, behind a Service with a numeric
// targetPort (so detour injects it in redirect mode).
func deployProbed(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name string, period, threshold int32) *corev1.Service {
	t.Helper()
	labels := map[string]string{"app": name}
	uid := int64(images.NonRoot)
	nonRoot := true
	replicas := int32(1)
	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(echoHTTPPort)}},
			PeriodSeconds: period, FailureThreshold: threshold, TimeoutSeconds: 1,
		}
	}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken: new(bool),
					Containers: []corev1.Container{{
						Name: "echo", Image: images.Echo, ImagePullPolicy: corev1.PullNever,
						Env:             []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
						Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: echoHTTPPort}},
						LivenessProbe:   probe("/"),
						ReadinessProbe:  probe("/"),
						SecurityContext: &corev1.SecurityContext{RunAsNonRoot: &nonRoot, RunAsUser: &uid, AllowPrivilegeEscalation: new(bool)},
					}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt32(echoHTTPPort)},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}
