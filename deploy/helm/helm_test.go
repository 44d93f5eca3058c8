package helm_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/releaseutil"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/detour-dev/detour/deploy"
)

const chartDir = "detour"

// kubeVersion is the Kubernetes release that this module's client-go
// belongs to (k8s.io/api v0.X.Y is Kubernetes 1.X.Y): Helm's own default,
// v1.20, is older than the chart's kubeVersion constraint.
var kubeVersion = func() *chartutil.KubeVersion {
	v := "v1.30.0"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "k8s.io/api" && strings.HasPrefix(d.Version, "v0.") {
				v = "v1." + strings.TrimPrefix(d.Version, "v0.")
			}
		}
	}
	kv, err := chartutil.ParseKubeVersion(v)
	if err != nil {
		panic(err)
	}
	return kv
}()

// obj is one manifest document, decoded as JSON decodes it.
type obj = map[string]any

// objects maps "Kind namespace/name" to the object.
type objects map[string]obj

func key(o obj) string {
	md, _ := o["metadata"].(map[string]any)
	ns, _ := md["namespace"].(string)
	return fmt.Sprintf("%s %s/%s", o["kind"], ns, md["name"])
}

func (os objects) keys() []string {
	k := make([]string, 0, len(os))
	for n := range os {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

// parse decodes a stream of YAML documents, skipping empty ones.
func parse(t *testing.T, what string, docs ...string) objects {
	t.Helper()
	out := objects{}
	for _, stream := range docs {
		for _, d := range strings.Split("\n"+stream, "\n---") {
			j, err := yaml.YAMLToJSON([]byte(d))
			if err != nil {
				t.Fatalf("%s: %v\n%s", what, err, d)
			}
			var o obj
			if err := json.Unmarshal(j, &o); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if o == nil {
				continue
			}
			k := key(o)
			if _, dup := out[k]; dup {
				t.Fatalf("%s: %s twice", what, k)
			}
			out[k] = o
		}
	}
	return out
}

// kustomize builds a kustomization directory with kustomize's own Go API,
// as `kubectl apply -k` does.
func kustomize(t *testing.T, dir string) objects {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	y, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return parse(t, "kustomize "+dir, string(y))
}

// template renders the chart as `helm template detour deploy/helm/detour
// -n NAMESPACE -f values` does, through Helm's Go module.
func template(namespace, values string) (string, error) {
	chrt, err := loader.Load(chartDir)
	if err != nil {
		return "", fmt.Errorf("load chart: %w", err)
	}
	vals, err := chartutil.ReadValues([]byte(values))
	if err != nil {
		return "", fmt.Errorf("values: %w", err)
	}
	install := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	install.DryRun, install.ClientOnly, install.Replace = true, true, true
	install.ReleaseName, install.Namespace = "detour", namespace
	install.KubeVersion = kubeVersion
	rel, err := install.Run(chrt, vals)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, m := range releaseutil.SplitManifests(rel.Manifest) {
		b.WriteString("---\n" + m + "\n")
	}
	return b.String(), nil
}

func render(t *testing.T, namespace, values string) objects {
	t.Helper()
	out, err := template(namespace, values)
	if err != nil {
		t.Fatalf("helm template -n %s with\n%s\n%v", namespace, values, err)
	}
	return parse(t, "helm template", out)
}

// The edits below turn the base into what the chart should render for
// some values; each names the base's field it changes.

func deployment(os objects) obj { return os["Deployment detour-system/detour-webhook"] }

func container(os objects) obj {
	return dig(deployment(os), "spec", "template", "spec", "containers").([]any)[0].(obj)
}

func dig(o obj, path ...string) any {
	var cur any = o
	for _, p := range path {
		cur = cur.(obj)[p]
	}
	return cur
}

func set(o obj, v any, path ...string) {
	dig(o, path[:len(path)-1]...).(obj)[path[len(path)-1]] = v
}

func args(os objects) []any { return container(os)["args"].([]any) }

func setArg(os objects, old, new string) {
	a := args(os)
	i := slices.Index(a, any(old))
	if i < 0 {
		panic("no argument " + old)
	}
	a[i] = new
}

func appendArgs(os objects, more ...string) {
	a := args(os)
	for _, m := range more {
		a = append(a, m)
	}
	container(os)["args"] = a
}

// asJSON turns Go values into what parse would have decoded.
func asJSON(t *testing.T, v any) any {
	t.Helper()
	j, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(j, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func without(os objects, keys ...string) objects {
	for _, k := range keys {
		if _, ok := os[k]; !ok {
			panic("no object " + k)
		}
		delete(os, k)
	}
	return os
}

func compare(t *testing.T, got, want objects) {
	t.Helper()
	if d := cmp.Diff(want.keys(), got.keys()); d != "" {
		t.Errorf("objects differ (-kustomize +helm):\n%s", d)
	}
	for _, k := range want.keys() {
		if g, ok := got[k]; ok {
			if d := cmp.Diff(want[k], g); d != "" {
				t.Errorf("%s differs (-kustomize +helm):\n%s", k, d)
			}
		}
	}
}

// TestChartMatchesKustomize renders the chart with Helm and the kustomize
// base and overlay with kustomize, and compares them object by object:
// the defaults give the base exactly, cert-manager mode the cert-manager
// overlay, and each value changes only the fields it names.
func TestChartMatchesKustomize(t *testing.T) {
	base := func() objects { return kustomize(t, "../base") }

	// detour install applies deploy.Manifests(): the base's own files. They
	// are what kustomize builds from them (nothing is transformed).
	ms, err := deploy.Manifests()
	if err != nil {
		t.Fatal(err)
	}
	var embedded []string
	for _, m := range ms {
		embedded = append(embedded, string(m.Data))
	}
	compare(t, parse(t, "deploy.Manifests", embedded...), base())

	cases := []struct {
		name, values string
		want         func() objects
	}{{
		name:   "defaults and the namespace",
		values: "namespace: {create: true}",
		want:   base,
	}, {
		name:   "defaults",
		values: "",
		want:   func() objects { return without(base(), "Namespace /detour-system") },
	}, {
		name:   "cert-manager",
		values: "namespace: {create: true}\ncertManager: {enabled: true}",
		want:   func() objects { return kustomize(t, "../cert-manager") },
	}, {
		// What `detour install --image … --cluster-cidrs …` applies
		// (client/install: setImage, setArg).
		name: "image and cluster ranges",
		values: `
image: {repository: registry.example/detour, tag: v1.2.3}
agent: {clusterCIDRs: [10.244.0.0/16, 10.96.0.0/12]}`,
		want: func() objects {
			os := without(base(), "Namespace /detour-system")
			container(os)["image"] = "registry.example/detour:v1.2.3"
			setArg(os, "--agent-image=detour.local/detour:dev", "--agent-image=registry.example/detour:v1.2.3")
			appendArgs(os, "--cluster-cidrs=10.244.0.0/16,10.96.0.0/12")
			return os
		},
	}, {
		// The overlay deploy/idle describes (testdata/idle), and what
		// `detour install --agent-max-idle 20s` applies: the idle reaper's
		// RBAC (deploy.IdleRBAC) and the flag.
		name:   "agent max idle",
		values: "agent: {maxIdle: 20s}",
		want: func() objects {
			os := without(base(), "Namespace /detour-system")
			appendArgs(os, "--agent-max-idle=20s")
			for k, o := range parse(t, "deploy/idle/rbac.yaml", string(deploy.IdleRBAC)) {
				os[k] = o
			}
			compare(t, without(kustomize(t, "testdata/idle"), "Namespace /detour-system"), os)
			return os
		},
	}, {
		name: "replicas, resources, namespace selector, agent defaults, flags",
		values: `
replicas: 3
resources: {requests: {cpu: 50m, memory: 64Mi}, limits: {memory: 256Mi}}
goMemLimit: 200MiB
image: {pullPolicy: Always}
podDisruptionBudget: {enabled: false}
namespaceSelector:
  excludeNamespaces: [kube-system, monitoring]
  matchLabels: {detour.dev/enabled: "true"}
  matchExpressions: [{key: tier, operator: NotIn, values: [prod]}]
agent: {image: registry.example/agent:v2, pullPolicy: Always}
extraArgs: [--log-level=debug]
nodeSelector: {kubernetes.io/os: linux}`,
		want: func() objects {
			os := without(base(), "Namespace /detour-system", "PodDisruptionBudget detour-system/detour-webhook")
			set(deployment(os), 3.0, "spec", "replicas")
			c := container(os)
			c["resources"] = asJSON(t, map[string]any{"requests": map[string]string{"cpu": "50m", "memory": "64Mi"}, "limits": map[string]string{"memory": "256Mi"}})
			c["env"].([]any)[1].(obj)["value"] = "200MiB"
			c["imagePullPolicy"] = "Always"
			set(deployment(os), asJSON(t, map[string]string{"kubernetes.io/os": "linux"}), "spec", "template", "spec", "nodeSelector")
			setArg(os, "--agent-image=detour.local/detour:dev", "--agent-image=registry.example/agent:v2")
			setArg(os, "--agent-pull-policy=IfNotPresent", "--agent-pull-policy=Always")
			appendArgs(os, "--log-level=debug")
			mwc := os["MutatingWebhookConfiguration /detour-webhook"]
			mwc["webhooks"].([]any)[0].(obj)["namespaceSelector"] = asJSON(t, map[string]any{
				"matchLabels": map[string]string{"detour.dev/enabled": "true"},
				"matchExpressions": []map[string]any{
					{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": []string{"kube-system", "monitoring", "detour-system"}},
					{"key": "tier", "operator": "NotIn", "values": []string{"prod"}},
				},
			})
			return os
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			compare(t, render(t, "detour-system", tc.values), tc.want())
		})
	}
}

// TestChartElsewhere: in another namespace and under another name, nothing
// of the default install is referred to, and the webhook is told its names.
func TestChartElsewhere(t *testing.T) {
	for _, certManager := range []bool{false, true} {
		t.Run(fmt.Sprintf("certManager=%v", certManager), func(t *testing.T) {
			values := fmt.Sprintf("fullnameOverride: detour-canary\ncertManager: {enabled: %v}", certManager)
			out, err := template("tools", values)
			if err != nil {
				t.Fatal(err)
			}
			// The only mention of the default name left is the app label
			// (and comments).
			for i, l := range strings.Split(out, "\n") {
				l = strings.TrimSpace(l)
				if strings.HasPrefix(l, "#") || l == "app.kubernetes.io/name: detour-webhook" || l == "command: [/usr/local/bin/detour-webhook]" {
					continue
				}
				if strings.Contains(l, "detour-system") || strings.Contains(l, "detour-webhook") {
					t.Errorf("line %d: %s refers to the default install", i+1, l)
				}
			}
			os := parse(t, "helm template", out)
			for k, o := range os {
				if n := dig(o, "metadata", "name"); n != "detour-canary" && k != "Issuer tools/detour-selfsigned" {
					t.Errorf("%s: name %v", k, n)
				}
			}
			a := os["Deployment tools/detour-canary"]
			c := dig(a, "spec", "template", "spec", "containers").([]any)[0].(obj)
			got := fmt.Sprint(c["args"])
			for _, want := range []string{"--service-name=detour-canary", "--cert-secret=detour-canary-tls", "--webhook-config=detour-canary"} {
				if !strings.Contains(got, want) {
					t.Errorf("args %s lack %s", got, want)
				}
			}
			if dig(os["ClusterRole /detour-canary"], "rules").([]any)[1].(obj)["resourceNames"].([]any)[0] != "detour-canary" {
				t.Error("the ClusterRole does not name the renamed webhook configuration")
			}
			if !certManager {
				return
			}
			cert := os["Certificate tools/detour-canary"]
			if d := cmp.Diff([]any{"detour-canary.tools.svc", "detour-canary.tools.svc.cluster.local"}, dig(cert, "spec", "dnsNames")); d != "" {
				t.Errorf("certificate names: %s", d)
			}
			if a := dig(os["MutatingWebhookConfiguration /detour-canary"], "metadata", "annotations"); fmt.Sprint(a) != "map[cert-manager.io/inject-ca-from:tools/detour-canary]" {
				t.Errorf("annotations %v", a)
			}
		})
	}
}

// TestChartIssuerRef: with an issuer of the user's, no Issuer is created.
func TestChartIssuerRef(t *testing.T) {
	os := render(t, "detour-system", "certManager: {enabled: true, issuerRef: {kind: ClusterIssuer, name: corp-ca}}")
	if _, ok := os["Issuer detour-system/detour-selfsigned"]; ok {
		t.Error("self-signed Issuer created beside the given issuerRef")
	}
	ref := dig(os["Certificate detour-system/detour-webhook"], "spec", "issuerRef")
	if d := cmp.Diff(map[string]any{"kind": "ClusterIssuer", "name": "corp-ca"}, ref); d != "" {
		t.Error(d)
	}
}

// TestChartRejectsBadValues: values.schema.json turns misuse into an error
// that names the value.
func TestChartRejectsBadValues(t *testing.T) {
	for _, tc := range []struct{ values, want string }{
		{"replica: 3", "replica"},
		{"agent: {pullPolicy: Sometimes}", "pullPolicy"},
		{"agent: {clusterCIDRs: [10.0.0.0]}", "clusterCIDRs"},
		{"agent: {maxIdle: 20 minutes}", "maxIdle"},
		{"image: {repository: ''}", "repository"},
		{"fullnameOverride: Detour_Webhook", "fullnameOverride"},
		{"extraArgs: [log-level=debug]", "extraArgs"},
		{"namespaceSelector: {matchExpressions: [{key: a, operator: Equals}]}", "operator"},
		{"certManager: {issuerRef: {kind: ClusterIssuer}}", "issuerRef"},
	} {
		_, err := template("detour-system", tc.values)
		t.Logf("%s: %v", tc.values, err)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("values %q: error %v, want one naming %s", tc.values, err, tc.want)
		}
	}
}

// TestChartLints runs `helm lint` (Helm's Go linter, with the schema) on
// the chart with the defaults and with every mode on.
func TestChartLints(t *testing.T) {
	for _, values := range []string{
		"",
		"namespace: {create: true}\ncertManager: {enabled: true}\nagent: {clusterCIDRs: [10.96.0.0/12]}",
		"fullnameOverride: detour-canary\nreplicas: 1\npodDisruptionBudget: {enabled: false}",
	} {
		vals, err := chartutil.ReadValues([]byte(values))
		if err != nil {
			t.Fatal(err)
		}
		l := lint.AllWithKubeVersion(chartDir, vals, "detour-system", kubeVersion)
		for _, m := range l.Messages {
			t.Logf("lint %q: %s", values, m)
			if m.Severity >= support.WarningSev {
				t.Errorf("lint %q: %s", values, m)
			}
		}
	}
}

// TestChartValuesDocumented: every value has a comment in values.yaml or
// sits under one (the docs page points there).
func TestChartValuesDocumented(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(data, []byte("\n"))
	for i, l := range lines {
		if len(l) == 0 || l[0] == '#' || l[0] == ' ' {
			continue
		}
		if i == 0 || !bytes.HasPrefix(lines[i-1], []byte("#")) {
			t.Errorf("values.yaml:%d: %s has no comment above it", i+1, l)
		}
	}
}
