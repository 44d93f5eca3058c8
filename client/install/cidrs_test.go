package install

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestDetectClusterCIDRs(t *testing.T) {
	cs := fake.NewClientset(
		&networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes"}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.96.0.0/16", "fd00:10:96::/112"}}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: corev1.NodeSpec{PodCIDRs: []string{"10.244.0.0/24"}}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "b"}, Spec: corev1.NodeSpec{PodCIDRs: []string{"10.244.1.0/24", "10.244.0.0/24"}}},
	)
	got, notes, err := DetectClusterCIDRs(context.Background(), cs)
	want := []string{"10.244.0.0/24", "10.244.1.0/24", "10.96.0.0/16", "fd00:10:96::/112"}
	if err != nil || !slices.Equal(got, want) || len(notes) != 0 {
		t.Fatalf("got %v %v %v, want %v", got, notes, err, want)
	}
	// An installer that may not list them is told what to give instead.
	deny := fake.NewClientset()
	deny.PrependReactor("list", "servicecidrs", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "networking.k8s.io", Resource: "servicecidrs"}, "", nil)
	})
	_, notes, err = DetectClusterCIDRs(context.Background(), deny)
	if err != nil || len(notes) != 1 || !strings.Contains(notes[0], "--cluster-cidrs") {
		t.Fatalf("forbidden: %v %v", notes, err)
	}
}

// TestInstallPassesClusterCIDRsToTheWebhook: detected, or given (and
// checked), they become the webhook's --cluster-cidrs.
func TestInstallPassesClusterCIDRsToTheWebhook(t *testing.T) {
	cs := newClientset()
	_, _ = cs.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n"}, Spec: corev1.NodeSpec{PodCIDRs: []string{"10.244.0.0/24"}}}, metav1.CreateOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go becomeReady(ctx, t, cs)
	var progress bytes.Buffer
	if _, err := Install(ctx, cs, Options{Progress: &progress, PollInterval: 10 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	d, err := cs.AppsV1().Deployments(Namespace).Get(ctx, WebhookDeployment, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if args := d.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--cluster-cidrs=10.244.0.0/24") {
		t.Fatalf("args %v", args)
	}
	if !strings.Contains(progress.String(), "cluster ranges the agents dial for local processes: 10.244.0.0/24") {
		t.Errorf("progress: %s", progress.String())
	}
	if _, err := Install(ctx, cs, Options{ClusterCIDRs: []string{"10.0.0.0/33"}}); err == nil || !strings.Contains(err.Error(), "--cluster-cidrs") {
		t.Fatalf("bad CIDR: %v", err)
	}
}
