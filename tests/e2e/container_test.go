//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
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

// TestInterceptContainer: a pod of two app containers, blue (8080) and
// green (8081), each behind its own Service port. Intercepting green's
// port makes the agent serve green (the webhook alone would serve blue,
// the first a Service targets) and green's traffic reaches the
// workstation while blue's still reaches blue; --container naming a
// container without that port, or none of the pod's, is an error before
// anything changes.
func TestInterceptContainer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cs := clientset(t, restConfig(t))
	u := newUser(t)
	u.must("install", "--image", images.Detour)
	ns := createNamespace(ctx, t, cs, "ctr")
	svc := deployTwoContainers(ctx, t, cs, ns, "duo")
	local := localServer(t, "workstation")

	for _, bad := range []struct{ container, says string }{
		{"blue", `container "blue" of deployment/duo does not declare`},
		{"red", `--container "red": deployment/duo has no such container (it has blue, green)`},
	} {
		r := u.run("intercept", "duo", "-n", ns, "--port", fmt.Sprintf("%d:green", local), "--container", bad.container)
		if r.code == 0 || !strings.Contains(r.stderr, bad.says) {
			t.Fatalf("--container %s: want a failure saying %q, got %s", bad.container, bad.says, r)
		}
	}
	d, err := cs.AppsV1().Deployments(ns).Get(ctx, "duo", metav1.GetOptions{})
	if err != nil || d.Spec.Template.Annotations[annotations.Inject] != "" || d.Spec.Template.Annotations[annotations.Container] != "" {
		t.Fatalf("a refused --container changed the workload: %v %v", d.Spec.Template.Annotations, err)
	}

	u.must("intercept", "duo", "-n", ns, "--port", fmt.Sprintf("%d:green", local))
	green := fmt.Sprintf("http://%s:81/", svc.Spec.ClusterIP)
	blue := fmt.Sprintf("http://%s:80/", svc.Spec.ClusterIP)
	if !waitForSteady(t, green, "workstation", 5, 2*time.Minute) {
		t.Fatal("green's port does not reach the workstation")
	}
	if !waitForSteady(t, blue, "hello from blue", 3, time.Minute) {
		t.Fatal("blue's port does not reach blue while green is intercepted")
	}
	d, _ = cs.AppsV1().Deployments(ns).Get(ctx, "duo", metav1.GetOptions{})
	if got := d.Spec.Template.Annotations[annotations.Container]; got != "green" {
		t.Errorf("%s = %q, want green", annotations.Container, got)
	}
	u.must("leave", "duo-"+ns)
	if !waitForSteady(t, green, "hello from green", 3, time.Minute) {
		t.Fatal("green's port does not reach green after leave")
	}
	// Back to blue: the agents serve green now, and the old pods' ready
	// agents must not be taken for new ones (the intercept waits for the
	// roll to agents serving blue; it was refused, "port not served").
	u.must("intercept", "duo", "-n", ns, "--port", fmt.Sprintf("%d:http", local))
	if !waitForSteady(t, blue, "workstation", 5, 2*time.Minute) {
		t.Fatal("blue's port does not reach the workstation after switching back")
	}
	u.must("leave", "duo-"+ns)
}

// deployTwoContainers deploys echo twice in one pod: blue on 8080
// (Service port 80, "http") and green on 8081 (Service port 81, "green").
func deployTwoContainers(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name string) *corev1.Service {
	t.Helper()
	labels := map[string]string{"app": name}
	uid := int64(images.NonRoot)
	nonRoot := true
	echo := func(color string, http, tcp, udp int32, port string) corev1.Container {
		return corev1.Container{
			Name: color, Image: images.Echo, ImagePullPolicy: corev1.PullNever,
			Env: []corev1.EnvVar{{Name: "POD_NAME", Value: color}, {Name: "HTTP_ADDR", Value: fmt.Sprintf(":%d", http)},
				{Name: "TCP_ADDR", Value: fmt.Sprintf(":%d", tcp)}, {Name: "UDP_ADDR", Value: fmt.Sprintf(":%d", udp)}},
			Ports:           []corev1.ContainerPort{{Name: port, ContainerPort: http}},
			ReadinessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromString(port)}}, PeriodSeconds: 1},
			SecurityContext: &corev1.SecurityContext{RunAsNonRoot: &nonRoot, RunAsUser: &uid, AllowPrivilegeEscalation: new(bool)},
		}
	}
	replicas := int32(1)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{AutomountServiceAccountToken: new(bool), Containers: []corev1.Container{
					echo("blue", 8080, 9000, 9001, "http"), echo("green", 8081, 9002, 9003, "green")}},
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
			{Name: "green", Port: 81, TargetPort: intstr.FromString("green")},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}
