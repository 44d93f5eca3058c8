//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/release"

	"github.com/detour-dev/detour/client/install"
	"github.com/detour-dev/detour/internal/annotations"
)

// TestHelmChart installs deploy/helm/detour with Helm's Go module (as
// `helm install` does, waiting for readiness) as a second, independent
// webhook beside whatever detour install the other tests left: its own
// release namespace and object names, and a namespace selector that lets it
// see only this test's namespace. Its webhook publishes its CA under the
// renamed objects, injects a real workload whose traffic then flows through
// the agent, survives `helm upgrade` (the caBundle the webhook wrote is kept),
// and `helm uninstall` removes its cluster-scoped objects.
func TestHelmChart(t *testing.T) {
	cfg := restConfig(t)
	cs := clientset(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()

	suffix := randomSuffix(t)
	name := "detour-helm-" + suffix
	releaseNS := createNamespace(ctx, t, cs, "detour-helm")
	appNS := createNamespace(ctx, t, cs, "detour-helm-app")
	selector := "detour.dev/helm-e2e"
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, selector, suffix)
	if _, err := cs.CoreV1().Namespaces().Patch(ctx, appNS, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	cidrs, notes, err := install.DetectClusterCIDRs(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster ranges %v %v", cidrs, notes)

	chrt, err := loader.Load("../../deploy/helm/detour")
	if err != nil {
		t.Fatal(err)
	}
	// Pull policy Never for the agents tells this release's injections
	// from the default install's (IfNotPresent); webhook configurations
	// are called in name order, so detour-helm-… comes first anyway.
	values := func(replicas int) map[string]any {
		v := map[string]any{
			"fullnameOverride":    name,
			"replicas":            replicas,
			"podDisruptionBudget": map[string]any{"enabled": replicas > 1},
			"namespaceSelector":   map[string]any{"matchLabels": map[string]any{selector: suffix}},
			"agent":               map[string]any{"pullPolicy": "Never", "clusterCIDRs": cidrs},
		}
		y, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		out, err := chartutil.ReadValues(y)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	ac := helmConfig(t, releaseNS)

	start := time.Now()
	in := action.NewInstall(ac)
	in.ReleaseName, in.Namespace = "detour", releaseNS
	in.Wait, in.Timeout = true, 4*time.Minute
	rel, err := in.RunWithContext(ctx, chrt, values(1))
	uninstalled := false
	t.Cleanup(func() {
		if !uninstalled {
			if _, err := action.NewUninstall(ac).Run("detour"); err != nil {
				t.Errorf("helm uninstall: %v", err)
			}
		}
	})
	if err != nil {
		t.Fatalf("helm install: %v\n%s", err, describePods(ctx, cs, releaseNS))
	}
	if rel.Info.Status != release.StatusDeployed {
		t.Fatalf("release %s", rel.Info.Status)
	}
	t.Logf("helm install: release %s v%d %s in %s", rel.Name, rel.Version, rel.Info.Status, time.Since(start).Round(time.Millisecond))
	t.Logf("notes:\n%s", rel.Info.Notes)

	waitHelmInjecting(ctx, t, cs, name, appNS)
	pod := deployOptedInEcho(ctx, t, cs, appNS, "echo", intstr.FromString("http"), true)
	assertInjected(t, pod, annotations.ModeRename)
	assertHelmAgent(t, pod)
	assertTrafficThroughAgent(ctx, t, cfg, cs, appNS, pod)

	t.Run("Upgrade", func(t *testing.T) {
		up := action.NewUpgrade(ac)
		up.Namespace, up.Wait, up.Timeout = releaseNS, true, 4*time.Minute
		rel, err := up.RunWithContext(ctx, "detour", chrt, values(2))
		if err != nil {
			t.Fatalf("helm upgrade: %v\n%s", err, describePods(ctx, cs, releaseNS))
		}
		d, err := cs.AppsV1().Deployments(releaseNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil || *d.Spec.Replicas != 2 || d.Status.AvailableReplicas != 2 {
			t.Fatalf("after upgrade to v%d: deployment %v", rel.Version, err)
		}
		if _, err := cs.PolicyV1().PodDisruptionBudgets(releaseNS).Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Errorf("PodDisruptionBudget after upgrade: %v", err)
		}
		// The upgrade's three-way merge leaves the caBundle that the
		// webhook wrote: injection goes on without a pause.
		waitHelmInjecting(ctx, t, cs, name, appNS)
	})

	t.Run("Uninstall", func(t *testing.T) {
		if _, err := action.NewUninstall(ac).Run("detour"); err != nil {
			t.Fatalf("helm uninstall: %v", err)
		}
		uninstalled = true
		for what, get := range map[string]func() error{
			"MutatingWebhookConfiguration": func() error {
				_, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
				return err
			},
			"ClusterRole": func() error {
				_, err := cs.RbacV1().ClusterRoles().Get(ctx, name, metav1.GetOptions{})
				return err
			},
			"ClusterRoleBinding": func() error {
				_, err := cs.RbacV1().ClusterRoleBindings().Get(ctx, name, metav1.GetOptions{})
				return err
			},
		} {
			if err := get(); !apierrors.IsNotFound(err) {
				t.Errorf("%s %s after helm uninstall: %v", what, name, err)
			}
		}
	})
}

// helmConfig is Helm's action configuration for the test cluster, with
// releases stored as Secrets in namespace (Helm's default driver).
func helmConfig(t *testing.T, namespace string) *action.Configuration {
	t.Helper()
	kubeconfig := kubeconfigPath()
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig, flags.Namespace = &kubeconfig, &namespace
	ac := new(action.Configuration)
	if err := ac.Init(flags, namespace, "secret", func(format string, v ...any) { t.Logf("helm: "+format, v...) }); err != nil {
		t.Fatalf("helm configuration: %v", err)
	}
	return ac
}

// waitHelmInjecting waits until the release's webhook has published its CA
// in its own (renamed) configuration and a dry-run pod in ns comes back
// injected by it.
func waitHelmInjecting(ctx context.Context, t *testing.T, cs kubernetes.Interface, name, ns string) {
	t.Helper()
	start := time.Now()
	var last string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		mwc, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
		if err != nil || len(mwc.Webhooks) != 1 || len(mwc.Webhooks[0].ClientConfig.CABundle) == 0 {
			last = fmt.Sprintf("no caBundle in %s yet (%v)", name, err)
			return false, nil
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				GenerateName: "helm-check-", Namespace: ns,
				Annotations: map[string]string{annotations.Inject: annotations.InjectEnabled, annotations.Ports: "8080"},
			},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "detour.local/injection-check", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}},
		}
		out, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		for _, c := range out.Spec.Containers {
			if c.Name == annotations.AgentContainerName && c.ImagePullPolicy == corev1.PullNever {
				return true, nil
			}
		}
		last = fmt.Sprintf("dry-run pod not injected by %s: %d containers", name, len(out.Spec.Containers))
		return false, nil
	})
	if err != nil {
		t.Fatalf("the release's webhook is not injecting: %v: %s", err, last)
	}
	t.Logf("%s injecting %s after %s", name, ns, time.Since(start).Round(time.Millisecond))
}

// assertHelmAgent: the agent came from this release's webhook.
func assertHelmAgent(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	for _, c := range pod.Spec.Containers {
		if c.Name == annotations.AgentContainerName && c.ImagePullPolicy != corev1.PullNever {
			t.Errorf("agent of %s has pull policy %s: injected by another webhook, not the release's", pod.Name, c.ImagePullPolicy)
		}
	}
}
