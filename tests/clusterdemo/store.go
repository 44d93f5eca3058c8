package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/detour-dev/detour/tests/internal/images"
)

// The data store the sample app reads: etcd (the binary the cluster itself
// runs, as the image detour.local/etcd:dev), behind the Service "store".
const (
	storeName = "store"
	storePort = 2379
	storeURL  = "http://store:2379" // what the app is told: a name only the cluster resolves
	storeKey  = "greeting"
	seedName  = "store-seed"
)

// deployStore runs a one-member etcd (client URL plain http, data in an
// emptyDir) and its Service, and waits until it is ready.
func deployStore(ctx context.Context, cs kubernetes.Interface) error {
	labels := map[string]string{"app": storeName}
	one := int32(1)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: storeName},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken: new(bool),
					Containers:                   []corev1.Container{etcdContainer()},
					Volumes:                      []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
				},
			},
		},
	}
	if err := createRetrying(ctx, "the store Deployment", func() error {
		_, err := cs.AppsV1().Deployments(namespace).Create(ctx, dep, metav1.CreateOptions{})
		return err
	}); err != nil {
		return err
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: storeName},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{
			{Name: "client", Port: storePort, TargetPort: intstr.FromString("client")},
		}},
	}
	if err := createRetrying(ctx, "the store Service", func() error {
		_, err := cs.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{})
		return err
	}); err != nil {
		return err
	}
	return waitFor(ctx, 2*time.Minute, func() bool {
		d, err := cs.AppsV1().Deployments(namespace).Get(ctx, storeName, metav1.GetOptions{})
		return err == nil && d.Status.ReadyReplicas == 1
	})
}

func etcdContainer() corev1.Container {
	uid, nonRoot := int64(images.NonRoot), true
	return corev1.Container{
		Name: "etcd", Image: images.Etcd, ImagePullPolicy: corev1.PullNever,
		Args: []string{
			"--name=" + storeName, "--data-dir=/var/lib/etcd/data",
			fmt.Sprintf("--listen-client-urls=http://0.0.0.0:%d", storePort), "--advertise-client-urls=" + storeURL,
			// A single member: its peer port stays on the pod's loopback.
			"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
			"--initial-cluster=" + storeName + "=http://127.0.0.1:2380",
		},
		Ports:           []corev1.ContainerPort{{Name: "client", ContainerPort: storePort}},
		VolumeMounts:    []corev1.VolumeMount{{Name: "data", MountPath: "/var/lib/etcd"}},
		ReadinessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: intstr.FromString("client")}}, PeriodSeconds: 1},
		SecurityContext: &corev1.SecurityContext{RunAsNonRoot: &nonRoot, RunAsUser: &uid, AllowPrivilegeEscalation: new(bool)},
	}
}

// seedStore puts the greeting into the store from a one-shot pod (the
// sample app's own binary, in its put mode), as any in-cluster client
// would: by the Service's name. It returns the pod's output.
func seedStore(ctx context.Context, cs kubernetes.Interface, value string) (string, error) {
	uid, nonRoot := int64(images.NonRoot), true
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: seedName},
		Spec: corev1.PodSpec{
			RestartPolicy:                corev1.RestartPolicyNever,
			AutomountServiceAccountToken: new(bool),
			Containers: []corev1.Container{{
				Name: "put", Image: images.Echo, ImagePullPolicy: corev1.PullNever,
				Command:         []string{"/echo", "put", storeURL, storeKey, value},
				SecurityContext: &corev1.SecurityContext{RunAsNonRoot: &nonRoot, RunAsUser: &uid, AllowPrivilegeEscalation: new(bool)},
			}},
		},
	}
	if err := createRetrying(ctx, "the seed pod", func() error {
		_, err := cs.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{})
		return err
	}); err != nil {
		return "", err
	}
	var phase corev1.PodPhase
	if err := waitFor(ctx, 2*time.Minute, func() bool {
		p, err := cs.CoreV1().Pods(namespace).Get(ctx, seedName, metav1.GetOptions{})
		if err == nil {
			phase = p.Status.Phase
		}
		return phase == corev1.PodSucceeded || phase == corev1.PodFailed
	}); err != nil {
		return "", fmt.Errorf("the seed pod did not finish (phase %q): %w", phase, err)
	}
	b, err := cs.CoreV1().Pods(namespace).GetLogs(seedName, &corev1.PodLogOptions{}).Do(ctx).Raw()
	out := strings.TrimSpace(string(b))
	if err != nil || phase != corev1.PodSucceeded {
		return out, fmt.Errorf("the seed pod %s (logs: %v): %s", phase, err, out)
	}
	return out, nil
}
