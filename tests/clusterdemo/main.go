// Command clusterdemo is detour's main demo (`make demo`): on the local
// Kubernetes cluster built from source (tests/cluster), it installs detour,
// deploys a two-replica sample app, runs a local version of it in this
// process, takes a personal (http) intercept with the real detour CLI, and
// shows a request with the header answered by this machine beside one
// without it answered by the cluster, the imported environment and a
// preview URL; then it leaves and shows the traffic back at the cluster.
// The cluster stays up afterwards, for you to keep playing.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/detour-dev/detour/tests/internal/cluster"
	"github.com/detour-dev/detour/tests/internal/images"
)

const (
	namespace = "detour-demo"
	appName   = "hello"
	appPort   = 8080
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	bin := flag.String("bin", "bin", "where make build put detour and detour-agent")
	flag.Parse()
	if err := run(ctx, *bin); err != nil {
		fmt.Fprintln(os.Stderr, "\ndemo:", err)
		os.Exit(1)
	}
}

func say(format string, a ...any) { fmt.Printf("\n==> "+format+"\n", a...) }

func run(ctx context.Context, bin string) error {
	detour, err := filepath.Abs(filepath.Join(bin, "detour"))
	if err != nil {
		return err
	}
	if _, err := os.Stat(detour); err != nil {
		return fmt.Errorf("%s: %w (run make build)", detour, err)
	}
	cfg := cluster.DefaultConfig()
	say("Bringing up the local Kubernetes cluster (first run: builds Kubernetes %s and etcd from source, ~20 min on 2 cores; later runs reuse %s)", cluster.KubernetesVersion, cfg.CacheDir)
	log := progressLogger()
	if err := cluster.Up(ctx, log, cfg); err != nil {
		return fmt.Errorf("cluster up: %w (make cluster-down cleans up a half-started cluster)", err)
	}
	kubeconfig := cfg.AdminKubeconfig()
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}

	home, err := os.MkdirTemp("", "detour-demo-home-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(home)
	u := &cli{bin: detour, env: []string{"KUBECONFIG=" + kubeconfig, "DETOUR_HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, "config")}}
	defer u.run(context.WithoutCancel(ctx), "quit")

	say("Installing detour into the cluster: detour install")
	if _, err := u.show(ctx, "install", "--image", images.Detour); err != nil {
		return err
	}

	say("Deploying the sample app %q (2 replicas) and its Service in namespace %s", appName, namespace)
	svc, err := deploySample(ctx, cs)
	if err != nil {
		return err
	}
	url := fmt.Sprintf("http://%s/", svc.Spec.ClusterIP)
	if err := waitFor(ctx, 2*time.Minute, func() bool { return strings.HasPrefix(get(url), "hello from "+appName) }); err != nil {
		return fmt.Errorf("the sample app never answered at %s: %w", url, err)
	}
	fmt.Printf("    curl %s  →  %s\n", url, get(url))

	say("Starting a local version of the app on this machine (your laptop, with your changes)")
	local, stopLocal, err := serveLocal()
	if err != nil {
		return err
	}
	defer stopLocal()
	fmt.Printf("    http://127.0.0.1:%d  →  %s\n", local, get(fmt.Sprintf("http://127.0.0.1:%d/", local)))

	envFile := filepath.Join(home, "hello.env")
	say("Personal intercept: only requests that carry your header come to this machine")
	out, err := u.show(ctx, "intercept", appName, "-n", namespace, "--port", fmt.Sprintf("%d:http", local),
		"--http-match", "auto", "--env-file", envFile,
		"--preview-url", "--ingress-host", svc.Spec.ClusterIP, "--ingress-port", "80")
	if err != nil {
		return err
	}
	header := regexp.MustCompile(`(?m)^\s+header:\s+(\S+): (\S+)$`).FindStringSubmatch(out)
	preview := regexp.MustCompile(`(?m)^\s+preview:\s+(\S+)$`).FindStringSubmatch(out)
	if header == nil || preview == nil {
		return errors.New("the intercept summary lacks the header or the preview URL")
	}

	say("Side by side: the same Service, with and without your header")
	withHeader, without := "", ""
	// kube-proxy and the agents need a moment after the rollout.
	if err := waitFor(ctx, time.Minute, func() bool {
		withHeader, without = get(url, header[1], header[2]), get(url)
		return strings.Contains(withHeader, "laptop") && strings.HasPrefix(without, "hello from "+appName)
	}); err != nil {
		return fmt.Errorf("routing did not settle: with header %q, without %q", withHeader, without)
	}
	for i := 0; i < 3; i++ {
		fmt.Printf("    curl -H '%s: %s' %s  →  %s\n", header[1], header[2], url, get(url, header[1], header[2]))
		fmt.Printf("    curl %s %s→  %s\n", url, strings.Repeat(" ", len(header[1])+len(header[2])+8), get(url))
	}

	say("The app's environment, imported into %s (ConfigMap and Secret values resolved)", envFile)
	if b, err := os.ReadFile(envFile); err == nil {
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			fmt.Println("    " + line)
		}
	}

	say("Preview URL: opened in any browser, it routes that browser to this machine (a cookie), no header plugin")
	fmt.Printf("    %s\n", preview[1])
	fmt.Printf("    opening it    →  %s\n", get(preview[1]))

	say("detour status")
	if _, err := u.show(ctx, "status"); err != nil {
		return err
	}

	say("Leaving: detour leave")
	if _, err := u.show(ctx, "leave", appName+"-"+namespace); err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, func() bool { return strings.HasPrefix(get(url, header[1], header[2]), "hello from "+appName) }); err != nil {
		return errors.New("the traffic did not come back to the cluster after leave")
	}
	fmt.Printf("    curl -H '%s: %s' %s  →  %s\n", header[1], header[2], url, get(url, header[1], header[2]))

	say("Done. The cluster is still up; keep playing:")
	fmt.Printf(`    export KUBECONFIG=%s PATH=%s:$PATH
    python3 -m http.server 8000 &                                   # any local server
    detour intercept %s -n %s --port 8000:http --http-match x-dev=me
    curl -H 'x-dev: me' %s                                # → your server
    detour status          # your intercepts, per pod
    detour leave %s-%s
    detour quit            # stop the background daemon
    make cluster-down      # remove the cluster (the built binaries stay cached)
`, kubeconfig, filepath.Dir(detour), appName, namespace, url, appName, namespace)
	return nil
}

// cli runs the real detour binary as a user would, with the demo's own
// daemon home and config.
type cli struct {
	bin string
	env []string
}

func (c *cli) run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Env = append(os.Environ(), c.env...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr // rollout progress
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("detour %s: %w", strings.Join(args, " "), err)
	}
	return out.String(), nil
}

// show prints the command and its output, indented.
func (c *cli) show(ctx context.Context, args ...string) (string, error) {
	fmt.Printf("    $ detour %s\n", strings.Join(args, " "))
	out, err := c.run(ctx, args...)
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if line != "" {
			fmt.Println("      " + line)
		}
	}
	return out, err
}

func deploySample(ctx context.Context, cs kubernetes.Interface) (*corev1.Service, error) {
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	// A fresh start: an earlier run's app (and its agent) go first.
	_ = cs.AppsV1().Deployments(namespace).Delete(ctx, appName, metav1.DeleteOptions{})
	_ = cs.CoreV1().Services(namespace).Delete(ctx, appName, metav1.DeleteOptions{})
	_ = cs.CoreV1().ConfigMaps(namespace).Delete(ctx, appName+"-config", metav1.DeleteOptions{})
	_ = cs.CoreV1().Secrets(namespace).Delete(ctx, appName+"-db", metav1.DeleteOptions{})
	if _, err := cs.CoreV1().ConfigMaps(namespace).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: appName + "-config"},
		Data: map[string]string{"GREETING_STYLE": "friendly", "FEATURE_FLAGS": "new-checkout"}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if _, err := cs.CoreV1().Secrets(namespace).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: appName + "-db"},
		StringData: map[string]string{"url": "postgres://demo:demo-password@db." + namespace + ":5432/hello"}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	labels := map[string]string{"app": appName}
	replicas := int32(2)
	uid, nonRoot := int64(images.NonRoot), true
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: appName},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken: new(bool),
					Containers: []corev1.Container{{
						Name: appName, Image: images.Echo, ImagePullPolicy: corev1.PullNever,
						Env: []corev1.EnvVar{
							{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
							{Name: "DATABASE_URL", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
								LocalObjectReference: corev1.LocalObjectReference{Name: appName + "-db"}, Key: "url"}}},
						},
						EnvFrom:         []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: appName + "-config"}}}},
						Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: appPort}},
						ReadinessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromString("http")}}, PeriodSeconds: 1},
						SecurityContext: &corev1.SecurityContext{RunAsNonRoot: &nonRoot, RunAsUser: &uid, AllowPrivilegeEscalation: new(bool)},
					}},
				},
			},
		},
	}
	if err := waitFor(ctx, time.Minute, func() bool {
		_, err := cs.AppsV1().Deployments(namespace).Create(ctx, dep, metav1.CreateOptions{})
		return err == nil
	}); err != nil {
		return nil, fmt.Errorf("create the sample Deployment: %w", err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: appName},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
		}},
	}
	var created *corev1.Service
	if err := waitFor(ctx, time.Minute, func() bool {
		var err error
		created, err = cs.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{})
		return err == nil
	}); err != nil {
		return nil, fmt.Errorf("create the sample Service: %w", err)
	}
	return created, nil
}

// serveLocal runs "your local version" of the app.
func serveLocal() (port int, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello from your laptop (local version, with your changes)")
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return ln.Addr().(*net.TCPAddr).Port, func() { srv.Close() }, nil
}

func get(url string, header ...string) string {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err.Error()
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

func waitFor(ctx context.Context, within time.Duration, cond func() bool) error {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return nil
}

// progressLogger prints the cluster's build and start steps as progress.
func progressLogger() *zap.Logger {
	enc := zap.NewDevelopmentEncoderConfig()
	enc.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05")
	enc.EncodeLevel = zapcore.CapitalLevelEncoder
	return zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(os.Stdout), zapcore.InfoLevel))
}
