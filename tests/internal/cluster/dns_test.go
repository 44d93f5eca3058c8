package cluster

import (
	"go/format"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/detour-dev/detour/tests/internal/images"
)

func TestCoreDNSMain(t *testing.T) {
	src := coreDNSMain()
	formatted, err := format.Source([]byte(src))
	if err != nil {
		t.Fatalf("generated main.go does not parse: %v\n%s", err, src)
	}
	if string(formatted) != src {
		t.Errorf("generated main.go is not gofmt-clean:\n%s", src)
	}
	for _, p := range CoreDNSPlugins {
		if !strings.Contains(src, `_ "github.com/coredns/coredns/plugin/`+p+`"`) {
			t.Errorf("main.go does not import plugin %s", p)
		}
	}
	for _, p := range []string{"forward", "grpc", "etcd"} {
		if strings.Contains(src, "/plugin/"+p+`"`) {
			t.Errorf("main.go imports %s, which sends queries off the machine", p)
		}
	}
}

// TestDNSManifest decodes every object strictly (a misspelt field fails)
// and checks what the cluster relies on.
func TestDNSManifest(t *testing.T) {
	docs := strings.Split(dnsManifest(), "\n---\n")
	if len(docs) != 6 {
		t.Fatalf("%d objects, want 6", len(docs))
	}
	var role rbacv1.ClusterRole
	var cm corev1.ConfigMap
	var dep appsv1.Deployment
	var svc corev1.Service
	for i, into := range []any{&corev1.ServiceAccount{}, &role, &rbacv1.ClusterRoleBinding{}, &cm, &dep, &svc} {
		if err := yaml.UnmarshalStrict([]byte(docs[i]+"\n"), into); err != nil {
			t.Fatalf("object %d: %v\n%s", i, err, docs[i])
		}
	}
	if cm.Data["Corefile"] != Corefile || cm.Data["db.root"] != RootZone {
		t.Errorf("ConfigMap data does not round-trip:\n%q", cm.Data)
	}
	for _, r := range role.Rules {
		for _, s := range append(append(r.Verbs, r.Resources...), r.APIGroups...) {
			if s == "*" {
				t.Errorf("ClusterRole has a wildcard: %+v", r)
			}
		}
	}
	c := dep.Spec.Template.Spec.Containers[0]
	if c.Image != images.CoreDNS || c.ImagePullPolicy != corev1.PullNever || dep.Namespace != "kube-system" {
		t.Errorf("container %s %s in %s", c.Image, c.ImagePullPolicy, dep.Namespace)
	}
	if svc.Name != "kube-dns" || svc.Spec.ClusterIP != ClusterDNS || len(svc.Spec.Ports) != 2 {
		t.Errorf("service %s clusterIP %s ports %v", svc.Name, svc.Spec.ClusterIP, svc.Spec.Ports)
	}
	if strings.Contains(Corefile, "forward") {
		t.Error("the Corefile forwards: the cluster has no upstream")
	}
}
