package main

import (
	"context"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/detour-dev/detour/tests/internal/images"
)

// freshStart makes the namespace and removes an earlier run's objects (the
// app and its agent, the store and its data, the seed pod).
func freshStart(ctx context.Context, cs kubernetes.Interface) error {
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	for _, n := range []string{appName, storeName} {
		_ = cs.AppsV1().Deployments(namespace).Delete(ctx, n, metav1.DeleteOptions{})
		_ = cs.CoreV1().Services(namespace).Delete(ctx, n, metav1.DeleteOptions{})
	}
	_ = cs.CoreV1().Pods(namespace).Delete(ctx, seedName, metav1.DeleteOptions{})
	_ = cs.CoreV1().ConfigMaps(namespace).Delete(ctx, appName+"-config", metav1.DeleteOptions{})
	_ = cs.CoreV1().Secrets(namespace).Delete(ctx, appName+"-db", metav1.DeleteOptions{})
	return nil
}

// deploySample deploys the sample app: the echo image with a ConfigMap, a
// Secret and STORE_URL in its environment, two replicas, Service port 80.
func deploySample(ctx context.Context, cs kubernetes.Interface) (*corev1.Service, error) {
	if err := createRetrying(ctx, "the sample ConfigMap", func() error {
		_, err := cs.CoreV1().ConfigMaps(namespace).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: appName + "-config"},
			Data: map[string]string{"GREETING_STYLE": "friendly", "FEATURE_FLAGS": "new-checkout"}}, metav1.CreateOptions{})
		return err
	}); err != nil {
		return nil, err
	}
	if err := createRetrying(ctx, "the sample Secret", func() error {
		_, err := cs.CoreV1().Secrets(namespace).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: appName + "-db"},
			StringData: map[string]string{"url": "postgres://demo:demo-password@db." + namespace + ":5432/hello"}}, metav1.CreateOptions{})
		return err
	}); err != nil {
		return nil, err
	}
	labels := map[string]string{"app": appName}
	replicas := int32(2)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: appName},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{AutomountServiceAccountToken: new(bool), Containers: []corev1.Container{appContainer()}},
			},
		},
	}
	if err := createRetrying(ctx, "the sample Deployment", func() error {
		_, err := cs.AppsV1().Deployments(namespace).Create(ctx, dep, metav1.CreateOptions{})
		return err
	}); err != nil {
		return nil, err
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: appName},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
		}},
	}
	var created *corev1.Service
	err := createRetrying(ctx, "the sample Service", func() error {
		var err error
		created, err = cs.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{})
		return err
	})
	return created, err
}

func appContainer() corev1.Container {
	uid, nonRoot := int64(images.NonRoot), true
	return corev1.Container{
		Name: appName, Image: images.Echo, ImagePullPolicy: corev1.PullNever,
		Env: []corev1.EnvVar{
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "STORE_URL", Value: storeURL},
			{Name: "DATABASE_URL", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: appName + "-db"}, Key: "url"}}},
		},
		EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: appName + "-config"}}}},
		Ports:   []corev1.ContainerPort{{Name: "http", ContainerPort: appPort}},
		// A GET reads the store too (within 3 s; its errors are in the body).
		ReadinessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromString("http")}}, PeriodSeconds: 1, TimeoutSeconds: 5},
		SecurityContext: &corev1.SecurityContext{RunAsNonRoot: &nonRoot, RunAsUser: &uid, AllowPrivilegeEscalation: new(bool)},
	}
}
