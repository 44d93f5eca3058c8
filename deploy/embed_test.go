package deploy

import (
	"bytes"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

func TestManifestsListEveryFile(t *testing.T) {
	ms, err := Manifests()
	if err != nil {
		t.Fatal(err)
	}
	files, _ := fs.Glob(Base, "base/*.yaml")
	if len(ms) != len(files)-1 { // all but kustomization.yaml
		t.Errorf("kustomization lists %d files, base has %d manifests", len(ms), len(files)-1)
	}
	if ms[0].Name != "namespace.yaml" {
		t.Errorf("first manifest %s; the namespace must come first", ms[0].Name)
	}
}

func docs(t *testing.T, kind string) [][]byte {
	t.Helper()
	ms, err := Manifests()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, m := range ms {
		for _, d := range bytes.Split(m.Data, []byte("\n---")) {
			var tm struct{ Kind string }
			if err := yaml.Unmarshal(d, &tm); err != nil {
				t.Fatalf("%s: %v", m.Name, err)
			}
			if tm.Kind == kind {
				out = append(out, d)
			}
		}
	}
	return out
}

// TestRBACHasNoWildcards: least privilege, spelled out.
func TestRBACHasNoWildcards(t *testing.T) {
	for _, kind := range []string{"ClusterRole", "Role"} {
		for _, d := range docs(t, kind) {
			var r rbacv1.ClusterRole
			if err := yaml.UnmarshalStrict(d, &r); err != nil {
				t.Fatal(err)
			}
			for _, rule := range r.Rules {
				for _, v := range slices.Concat(rule.Verbs, rule.Resources, rule.APIGroups) {
					if strings.Contains(v, "*") {
						t.Errorf("%s %s: wildcard %q", kind, r.Name, v)
					}
				}
			}
		}
	}
}

// TestWebhookConfiguration pins the settings that keep the cluster safe.
func TestWebhookConfiguration(t *testing.T) {
	d := docs(t, "MutatingWebhookConfiguration")
	if len(d) != 1 {
		t.Fatalf("%d webhook configurations", len(d))
	}
	var c admissionregistrationv1.MutatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(d[0], &c); err != nil {
		t.Fatal(err)
	}
	w := c.Webhooks[0]
	if *w.FailurePolicy != admissionregistrationv1.Ignore || *w.TimeoutSeconds != 5 || *w.SideEffects != admissionregistrationv1.SideEffectClassNone ||
		!slices.Equal(w.AdmissionReviewVersions, []string{"v1"}) {
		t.Errorf("webhook settings changed: %+v", w)
	}
	if len(w.Rules) != 1 || !slices.Equal(w.Rules[0].Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Create}) || !slices.Equal(w.Rules[0].Resources, []string{"pods"}) {
		t.Errorf("rules %+v: want pods CREATE only", w.Rules)
	}
	excluded := w.NamespaceSelector.MatchExpressions[0]
	if excluded.Key != "kubernetes.io/metadata.name" || !slices.Contains(excluded.Values, "kube-system") || !slices.Contains(excluded.Values, "detour-system") {
		t.Errorf("namespace selector %+v", excluded)
	}
}

func TestDeploymentHardened(t *testing.T) {
	var dep appsv1.Deployment
	if err := yaml.UnmarshalStrict(docs(t, "Deployment")[0], &dep); err != nil {
		t.Fatal(err)
	}
	c := dep.Spec.Template.Spec.Containers[0]
	sc := c.SecurityContext
	if *dep.Spec.Replicas != 2 || !*sc.RunAsNonRoot || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || c.ReadinessProbe == nil || c.LivenessProbe == nil || c.Resources.Requests.Memory().IsZero() {
		t.Errorf("deployment not hardened: %+v", c)
	}
	if c.Image != "detour.local/detour:dev" || c.ImagePullPolicy != "IfNotPresent" {
		t.Errorf("image %s %s", c.Image, c.ImagePullPolicy)
	}
}

// TestCertManagerOverlay checks the overlay parses, builds on the base,
// patches objects the base has, and issues the Secret the webhook reads.
func TestCertManagerOverlay(t *testing.T) {
	k, err := os.ReadFile("cert-manager/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var kustomization struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
		Patches    []struct {
			Target struct{ Group, Version, Kind, Name string } `json:"target"`
			Patch  string                                      `json:"patch"`
		} `json:"patches"`
	}
	if err := yaml.UnmarshalStrict(k, &kustomization); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(kustomization.Resources, "../base") {
		t.Errorf("overlay resources %v lack ../base", kustomization.Resources)
	}
	for _, p := range kustomization.Patches {
		if len(docs(t, p.Target.Kind)) == 0 {
			t.Errorf("patch targets %s %s, which the base lacks", p.Target.Kind, p.Target.Name)
		}
		var ops []map[string]any
		if err := yaml.Unmarshal([]byte(p.Patch), &ops); err != nil || len(ops) == 0 {
			t.Errorf("patch of %s does not parse as a JSON patch: %v", p.Target.Kind, err)
		}
	}
	certs, err := os.ReadFile("cert-manager/certificate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(certs, []byte("secretName: detour-webhook-tls")) {
		t.Error("the Certificate does not issue detour-webhook-tls, the Secret the webhook reads")
	}
}
