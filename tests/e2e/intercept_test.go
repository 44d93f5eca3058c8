//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/detour-dev/detour/tests/internal/images"
)

// kubeProxyLag bounds how long kube-proxy may take to program a Service's
// changed endpoints (../shared/local-cluster-reference.md: "kube-proxy needs
// a moment after rollout before a new ClusterIP answers").
const kubeProxyLag = 30 * time.Second

var (
	detourOnce sync.Once
	detourBin  string
	detourErr  error
)

// detourBinary builds cmd/detour once per run.
func detourBinary(t testing.TB) string {
	t.Helper()
	detourOnce.Do(func() {
		dir, err := os.MkdirTemp("", "detour-e2e-bin-")
		if err != nil {
			detourErr = err
			return
		}
		detourBin = filepath.Join(dir, "detour")
		out, err := exec.Command("go", "build", "-o", detourBin, "github.com/detour-dev/detour/cmd/detour").CombinedOutput()
		if err != nil {
			detourErr = fmt.Errorf("build detour: %v\n%s", err, out)
		}
	})
	if detourErr != nil {
		t.Fatal(detourErr)
	}
	return detourBin
}

// user is one developer: their own daemon (DETOUR_HOME) and config dir.
type user struct {
	t    testing.TB
	bin  string
	home string
	kube string
	env  []string // more variables for the CLI and its daemon
}

func newUser(t testing.TB) *user {
	u := &user{t: t, bin: detourBinary(t), home: t.TempDir(), kube: kubeconfigPath()}
	os.Chmod(u.home, 0o700) // the daemon refuses a socket directory others can read
	t.Cleanup(func() {
		u.run("quit")
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(u.home, "daemon.log")); err == nil {
				t.Logf("daemon log of %s:\n%s", u.home, b)
			}
		}
	})
	return u
}

type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

func (u *user) run(args ...string) result {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, u.bin, args...)
	cmd.Env = append(append(os.Environ(), "KUBECONFIG="+u.kube, "DETOUR_HOME="+u.home, "XDG_CONFIG_HOME="+filepath.Join(u.home, "config")), u.env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errOut.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		u.t.Fatalf("run detour %v: %v", args, err)
	}
	return r
}

func (u *user) must(args ...string) result {
	u.t.Helper()
	r := u.run(args...)
	if r.code != 0 {
		u.t.Fatalf("detour %s failed:\n%s", strings.Join(args, " "), r)
	}
	return r
}

// localServer answers every request with name, on 127.0.0.1.
func localServer(t testing.TB, name string) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s\n", name)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// who asks the Service (ClusterIP, from the host over the cluster's veth)
// on a new connection and returns the body: "workstation" or the echo
// server's "hello from POD".
func who(url string) string { return ask(url) }

func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	eventuallyEvery(t, within, 200*time.Millisecond, what, cond)
}

// eventuallyEvery is eventually asking every pause (a timing that must
// not be rounded up to eventually's 200 ms).
func eventuallyEvery(t testing.TB, within, pause time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(pause)
	}
}

// deployWeb creates a 2-replica echo Deployment whose env comes partly from
// a ConfigMap and a Secret, and a Service with a named targetPort.
func deployWeb(ctx context.Context, t testing.TB, cs kubernetes.Interface, ns, name string, replicas int32) *corev1.Service {
	t.Helper()
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name + "-cfg"},
		Data: map[string]string{"CONFIG_VALUE": "from-configmap"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name + "-sec"},
		StringData: map[string]string{"password": "s3cr3t-value"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": name}
	uid := int64(images.NonRoot)
	nonRoot := true
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
						Env: []corev1.EnvVar{
							{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
							{Name: "PLAIN_VALUE", Value: "plain"},
							{Name: "SECRET_VALUE", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
								LocalObjectReference: corev1.LocalObjectReference{Name: name + "-sec"}, Key: "password"}}},
						},
						EnvFrom:         []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: name + "-cfg"}}}},
						Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: echoHTTPPort}, {Name: "tcp-echo", ContainerPort: echoTCPPort}},
						ReadinessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromString("http")}}, PeriodSeconds: 1},
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
			{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
			{Name: "tcp-echo", Port: echoTCPPort, TargetPort: intstr.FromInt32(echoTCPPort)},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

type statusJSON struct {
	Intercepts []struct {
		Name string `json:"name"`
		Pods []struct {
			Pod   string `json:"pod"`
			State string `json:"state"`
		} `json:"pods"`
	} `json:"intercepts"`
}

func activePods(t testing.TB, u *user, name string) map[string]bool {
	r := u.must("status", "-o", "json")
	var st statusJSON
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, r.stdout)
	}
	pods := map[string]bool{}
	for _, ic := range st.Intercepts {
		if ic.Name == name {
			for _, p := range ic.Pods {
				if p.State == "active" {
					pods[p.Pod] = true
				}
			}
		}
	}
	return pods
}

// TestInterceptLifecycle drives the real detour binary against the cluster:
// install, intercept (the agent injected on demand), traffic from both
// replicas to the workstation, env import, a deleted pod replaced and
// re-intercepted, conflicts, leave, -- CMD, and the errors users meet.
func TestInterceptLifecycle(t *testing.T) {
	ctx := context.Background()
	cfg := restConfig(t)
	cs := clientset(t, cfg)
	alice := newUser(t)
	alice.must("install", "--image", images.Detour)

	ns := createNamespace(ctx, t, cs, "cli")
	svc := deployWeb(ctx, t, cs, ns, "web", 2)
	url := fmt.Sprintf("http://%s:80/", svc.Spec.ClusterIP)
	eventually(t, time.Minute, "the Service answers before any intercept", func() bool { return strings.HasPrefix(who(url), "hello from web-") })

	local := localServer(t, "workstation")
	envFile := filepath.Join(t.TempDir(), "web.env")
	r := alice.must("intercept", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", local), "--env-file", envFile)
	name := "web-" + ns
	for _, want := range []string{fmt.Sprintf("Intercept %q is active", name), "deployment/web", "(2 pods)", "port http (80)", "container port 8080", "tcp", envFile} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("summary lacks %q:\n%s", want, r)
		}
	}

	t.Run("env file holds the container's env with ConfigMap and Secret values", func(t *testing.T) {
		b, err := os.ReadFile(envFile)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range []string{"CONFIG_VALUE=from-configmap", "SECRET_VALUE=s3cr3t-value", "PLAIN_VALUE=plain"} {
			if !strings.Contains(string(b), line+"\n") {
				t.Errorf("env file lacks %q:\n%s", line, b)
			}
		}
	})

	t.Run("both replicas send their traffic to the workstation", func(t *testing.T) {
		if pods := activePods(t, alice, name); len(pods) != 2 {
			t.Fatalf("active pods = %v, want 2", pods)
		}
		// kube-proxy programs a Service's new endpoints some seconds after
		// the API shows them (seen here: up to ~8 s on a freshly started
		// cluster, with no rule at all for the Service meanwhile). Once one
		// request has reached the workstation, all must.
		// kube-proxy may add the new endpoints before it drops the old ones,
		// so one good answer proves little: wait for 20 in a row. kube-proxy
		// picks an endpoint at random per connection, so 20 answers from the
		// workstation mean both pods' traffic arrives (one pod without the
		// intercept would answer "hello from …").
		if !waitForSteady(t, url, "workstation", 20, kubeProxyLag) {
			t.Fatalf("%s", agentLogs(ctx, cs, ns, "app=web"))
		}
	})

	t.Run("a second user is refused, naming the holder", func(t *testing.T) {
		bob := newUser(t)
		r := bob.run("intercept", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", local))
		if r.code == 0 || !strings.Contains(r.stderr, "already intercepted globally by") {
			t.Fatalf("bob's intercept:\n%s", r)
		}
	})

	t.Run("a deleted pod is replaced and intercepted without user action", func(t *testing.T) {
		before := activePods(t, alice, name)
		var victim string
		for p := range before {
			victim = p
			break
		}
		if err := cs.CoreV1().Pods(ns).Delete(ctx, victim, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Minute, "the replacement pod is intercepted", func() bool {
			now := activePods(t, alice, name)
			return len(now) == 2 && !now[victim]
		})
		if !waitForSteady(t, url, "workstation", 10, kubeProxyLag) {
			t.FailNow()
		}
	})

	t.Run("leave gives the traffic back", func(t *testing.T) {
		alice.must("leave", name)
		eventually(t, 5*time.Second, "the app answers after leave", func() bool { return strings.HasPrefix(who(url), "hello from web-") })
	})

	t.Run("-- CMD runs with the app's env and passes its exit code through", func(t *testing.T) {
		r := alice.run("intercept", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", local), "--",
			"sh", "-c", `test "$CONFIG_VALUE" = from-configmap && test "$(curl -s `+url+`)" = workstation && exit 7`)
		if r.code != 7 {
			t.Fatalf("exit code %d, want 7:\n%s", r.code, r)
		}
		eventually(t, 5*time.Second, "the app answers after CMD exited", func() bool { return strings.HasPrefix(who(url), "hello from web-") })
	})

	t.Run("errors name what is wrong", func(t *testing.T) {
		cases := []struct {
			args []string
			want string
		}{
			{[]string{"intercept", "nope", "-n", ns, "--port", "1234"}, `no Deployment, ReplicaSet or StatefulSet named "nope"`},
			{[]string{"intercept", "web", "-n", "no-such-ns-" + randomSuffix(t), "--port", "1234"}, "not found"},
			{[]string{"intercept", "web", "-n", ns, "--port", "1234"}, `has ports http (80), tcp-echo (9000)`},
			{[]string{"intercept", "web", "-n", ns, "--port", "1234:grpc"}, `has no port "grpc"`},
			{[]string{"intercept", "web", "-n", ns, "--port", "1234", "--service", "other"}, `no service "other"`},
			{[]string{"intercept", "web", "-n", ns, "--port", "1234", "--context", "nope"}, "nope"},
			{[]string{"intercept", "web", "-n", ns, "--port", "1234", "--server", "https://127.0.0.1:1"}, "cannot reach the cluster at https://127.0.0.1:1"},
		}
		for _, c := range cases {
			r := alice.run(c.args...)
			if r.code == 0 || !strings.Contains(r.stderr, c.want) {
				t.Errorf("detour %s: want an error containing %q, got:\n%s", strings.Join(c.args, " "), c.want, r)
			}
		}
		// A workload no Service selects.
		zero := int32(0)
		lonely := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "lonely"}, Spec: appsv1.DeploymentSpec{Replicas: &zero,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "lonely"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "lonely"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: images.Echo}}}}}}
		if _, err := cs.AppsV1().Deployments(ns).Create(ctx, lonely, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if r := alice.run("intercept", "lonely", "-n", ns, "--port", "1234"); r.code == 0 || !strings.Contains(r.stderr, `no service in namespace "`+ns+`" selects the pods of deployment/lonely`) {
			t.Errorf("no service:\n%s", r)
		}
		// Two Services selecting the workload: ambiguous until --service.
		if _, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web-canary"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		r := alice.run("intercept", "web", "-n", ns, "--port", "1234")
		if r.code == 0 || !strings.Contains(r.stderr, "2 services select the pods of deployment/web: web, web-canary; pick one with --service") {
			t.Errorf("ambiguous service:\n%s", r)
		}
		r = alice.must("intercept", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", local), "--service", "web-canary")
		if !strings.Contains(r.stdout, "service:    web-canary, port http (80)") {
			t.Errorf("--service web-canary:\n%s", r)
		}
		alice.must("leave", name)
		alice.must("quit")
		r = alice.run("leave", name)
		if r.code == 0 || !strings.Contains(r.stderr, "the detour daemon is not running") {
			t.Errorf("leave without a daemon:\n%s", r)
		}
	})
}

// agentLogs gathers the agent containers' logs and the pods' state, for a
// failure message.
func agentLogs(ctx context.Context, cs kubernetes.Interface, ns, selector string) string {
	var b strings.Builder
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return err.Error()
	}
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "pod %s phase=%s ip=%s deleting=%v annotations=%v\n", p.Name, p.Status.Phase, p.Status.PodIP, p.DeletionTimestamp != nil, p.Annotations)
		raw, err := cs.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: "detour-agent"}).DoRaw(ctx)
		if err != nil {
			fmt.Fprintf(&b, "  (no agent log: %v)\n", err)
			continue
		}
		fmt.Fprintf(&b, "  agent log:\n%s\n", raw)
	}
	slices, _ := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{})
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			fmt.Fprintf(&b, "endpoint %s %v ready=%v ports=%v\n", s.Name, e.Addresses, e.Conditions.Ready != nil && *e.Conditions.Ready, len(s.Ports))
		}
	}
	return b.String()
}

// waitForSteady polls url until it has answered want n times in a row, or
// within passes; it reports the last answer on failure.
func waitForSteady(t testing.TB, url, want string, n int, within time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(within)
	start := time.Now()
	inARow, last := 0, ""
	for inARow < n {
		if time.Now().After(deadline) {
			t.Errorf("%s did not answer %q %d times in a row within %s; last answer: %q", url, want, n, within, last)
			return false
		}
		if last = who(url); last == want {
			inARow++
		} else {
			inARow = 0
			time.Sleep(200 * time.Millisecond)
		}
	}
	t.Logf("%s answered %q %d times in a row after %s", url, want, n, time.Since(start).Round(time.Millisecond))
	return true
}
