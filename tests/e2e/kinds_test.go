//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/tests/internal/images"
)

func echoTemplate(labels map[string]string) corev1.PodTemplateSpec {
	uid := int64(images.NonRoot)
	nonRoot := true
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: new(bool),
			Containers: []corev1.Container{{
				Name: "echo", Image: images.Echo, ImagePullPolicy: corev1.PullNever,
				Env:             []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
				Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: echoHTTPPort}, {Name: "tcp-echo", ContainerPort: echoTCPPort}},
				ReadinessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(echoHTTPPort)}}, PeriodSeconds: 1},
				SecurityContext: &corev1.SecurityContext{RunAsNonRoot: &nonRoot, RunAsUser: &uid, AllowPrivilegeEscalation: new(bool)},
			}},
		},
	}
}

// TestInterceptWorkloadKinds: a StatefulSet behind a headless Service (ports
// by number), a bare ReplicaSet, the --workload naming rule, --to-pod, and
// uninstall --agent.
func TestInterceptWorkloadKinds(t *testing.T) {
	ctx := context.Background()
	cs := clientset(t, restConfig(t))
	u := newUser(t)
	u.must("install", "--image", images.Detour)
	ns := createNamespace(ctx, t, cs, "kinds")
	one := int32(1)

	// StatefulSet + headless Service with numeric targetPorts: redirect mode.
	stsLabels := map[string]string{"app": "db"}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: stsLabels, Ports: []corev1.ServicePort{
			{Name: "http", Port: echoHTTPPort, TargetPort: intstr.FromInt32(echoHTTPPort)},
			{Name: "tcp-echo", Port: echoTCPPort, TargetPort: intstr.FromInt32(echoTCPPort)}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.AppsV1().StatefulSets(ns).Create(ctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec: appsv1.StatefulSetSpec{Replicas: &one, ServiceName: "db", Selector: &metav1.LabelSelector{MatchLabels: stsLabels}, Template: echoTemplate(stsLabels)}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Bare ReplicaSet + ClusterIP Service.
	rsLabels := map[string]string{"app": "cache"}
	svc, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "cache"},
		Spec: corev1.ServiceSpec{Selector: rsLabels, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.AppsV1().ReplicaSets(ns).Create(ctx, &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "cache"},
		Spec: appsv1.ReplicaSetSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: rsLabels}, Template: echoTemplate(rsLabels)}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	local := localServer(t, "workstation")

	t.Run("statefulset behind a headless service, port by number, --workload naming", func(t *testing.T) {
		r := u.must("intercept", "mydb", "--workload", "db", "-n", ns, "--port", fmt.Sprintf("%d:%d", local, echoHTTPPort), "--to-pod", fmt.Sprint(echoTCPPort))
		if !strings.Contains(r.stdout, `Intercept "mydb" is active`) || !strings.Contains(r.stdout, "statefulset/db") {
			t.Fatalf("summary:\n%s", r)
		}
		pod, err := cs.CoreV1().Pods(ns).Get(ctx, "db-0", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(pod.Spec.InitContainers) == 0 || pod.Spec.InitContainers[0].Name != annotations.InitContainerName {
			t.Errorf("headless/numeric targetPort should use redirect mode with the init container; init containers: %v", pod.Spec.InitContainers)
		}
		url := fmt.Sprintf("http://%s:%d/", pod.Status.PodIP, echoHTTPPort)
		eventually(t, 5*time.Second, "the pod IP answers from the workstation", func() bool { return who(url) == "workstation" })

		// --to-pod: localhost:9000 here reaches the pod's own 127.0.0.1:9000.
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", echoTCPPort), 5*time.Second)
		if err != nil {
			t.Fatalf("--to-pod listener: %v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		payload := []byte("through the tunnel to the pod")
		c.Write(payload)
		c.(*net.TCPConn).CloseWrite()
		var got bytes.Buffer
		got.ReadFrom(c)
		if !bytes.Equal(got.Bytes(), payload) {
			t.Fatalf("--to-pod echo = %q, want %q", got.Bytes(), payload)
		}
		u.must("leave", "mydb")
	})

	t.Run("bare replicaset: its pods are recreated with the agent", func(t *testing.T) {
		r := u.must("intercept", "cache", "-n", ns, "--port", fmt.Sprint(local))
		if !strings.Contains(r.stdout, "replicaset/cache") {
			t.Fatalf("summary:\n%s", r)
		}
		url := fmt.Sprintf("http://%s:80/", svc.Spec.ClusterIP)
		if !waitForSteady(t, url, "workstation", 10, kubeProxyLag) {
			t.FailNow()
		}
		st := u.must("status")
		if !strings.Contains(st.stdout, "cache-"+ns) || !strings.Contains(st.stdout, "http (80)") || !strings.Contains(st.stdout, "1/1 active") {
			t.Fatalf("status:\n%s", st)
		}
		u.must("leave", "cache-"+ns)
	})

	t.Run("uninstall --agent removes the agent", func(t *testing.T) {
		r := u.must("uninstall", "--agent", "db", "-n", ns)
		if !strings.Contains(r.stdout, "Removed the detour agent from statefulset/db") {
			t.Fatalf("uninstall:\n%s", r)
		}
		eventually(t, 2*time.Minute, "db-0 runs without the agent", func() bool {
			p, err := cs.CoreV1().Pods(ns).Get(ctx, "db-0", metav1.GetOptions{})
			if err != nil || p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
				return false
			}
			for _, c := range p.Spec.Containers {
				if c.Name == annotations.AgentContainerName {
					return false
				}
			}
			return true
		})
		l := u.must("list", "-n", ns)
		if !strings.Contains(l.stdout, "statefulset/db") || !strings.Contains(l.stdout, "replicaset/cache") {
			t.Fatalf("list:\n%s", l)
		}
	})
}
