package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"go.uber.org/zap/zaptest"
)

var update = flag.Bool("update", false, "rewrite the golden files testdata/*.yaml.injected")

const goldenSuffix = ".injected"

// TestGolden runs every testdata/<case>.yaml (a Pod, then the Services of its
// namespace, as YAML documents) through the admission handler, applies the
// patch to the request object and compares the pod with
// <case>.yaml.injected. It also re-admits the injected pod and expects no
// patch: injection is idempotent.
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden cases in testdata/ (%v)", err)
	}
	goldens, _ := filepath.Glob("testdata/*.yaml" + goldenSuffix)
	for _, g := range goldens {
		if _, err := os.Stat(strings.TrimSuffix(g, goldenSuffix)); err == nil {
			continue
		}
		if *update {
			if err := os.Remove(g); err != nil {
				t.Fatal(err)
			}
			t.Logf("removed stale golden %s", g)
			continue
		}
		t.Errorf("stale golden %s: its case %s is gone (run with -update to remove it)", g, strings.TrimSuffix(g, goldenSuffix))
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			raw, services := loadCase(t, in)
			got := admitCase(t, raw, services)
			goldenPath := in + goldenSuffix
			if *update {
				if err := os.WriteFile(goldenPath, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(goldenPath)
			if err != nil {
				t.Fatalf("no golden for %s (run `go test ./webhook -run TestGolden -update`): %v", in, err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the golden; got:\n%s\nrun with -update if the change is intended", goldenPath, got)
			}
		})
	}
}

// loadCase reads a case file: the pod as JSON (the raw request object) and
// the Services.
func loadCase(t testing.TB, path string) ([]byte, []corev1.Service) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	docs := splitYAML(data)
	if len(docs) == 0 {
		t.Fatalf("%s: empty", path)
	}
	raw, err := yaml.YAMLToJSON(docs[0])
	if err != nil {
		t.Fatalf("%s: pod: %v", path, err)
	}
	var services []corev1.Service
	for i, d := range docs[1:] {
		var svc corev1.Service
		if err := yaml.UnmarshalStrict(d, &svc); err != nil {
			t.Fatalf("%s: document %d: %v", path, i+2, err)
		}
		if svc.Kind != "Service" {
			t.Fatalf("%s: document %d is a %q, want Service", path, i+2, svc.Kind)
		}
		services = append(services, svc)
	}
	return raw, services
}

func splitYAML(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(append([]byte("\n"), data...), []byte("\n---")) {
		if len(bytes.TrimSpace(d)) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

func testInjector(t testing.TB, services []corev1.Service) *Injector {
	cfg := DefaultInjectConfig()
	cfg.AgentImage = "detour.local/detour:test"
	return NewInjector(zaptest.NewLogger(t), ServiceSlice(services), cfg)
}

func podRequest(raw []byte) *admissionv1.AdmissionRequest {
	var meta struct {
		Metadata struct {
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(raw, &meta)
	ns := meta.Metadata.Namespace
	if ns == "" {
		ns = "default"
	}
	return &admissionv1.AdmissionRequest{
		UID:       types.UID("11111111-2222-3333-4444-555555555555"),
		Kind:      podKind,
		Resource:  podResource,
		Namespace: ns,
		Operation: admissionv1.Create,
		Object:    runtime.RawExtension{Raw: raw},
	}
}

// admitCase admits the pod and renders the outcome: a comment header
// (allowed, patched, warnings) and the pod after the patch, as YAML.
func admitCase(t *testing.T, raw []byte, services []corev1.Service) []byte {
	t.Helper()
	inj := testInjector(t, services)
	resp := inj.Handle(context.Background(), podRequest(raw))
	result := raw
	if resp.Patch != nil {
		if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
			t.Fatalf("patch without PatchType JSONPatch")
		}
		p, err := jsonpatch.DecodePatch(resp.Patch)
		if err != nil {
			t.Fatalf("decode patch: %v", err)
		}
		if result, err = p.Apply(raw); err != nil {
			t.Fatalf("apply patch: %v\n%s", err, resp.Patch)
		}
		again := inj.Handle(context.Background(), podRequest(result))
		if again.Patch != nil || !again.Allowed {
			t.Errorf("re-admitting the injected pod: allowed=%v patch=%s, want allowed without patch", again.Allowed, again.Patch)
		}
		checkPortNames(t, result)
	} else if resp.PatchType != nil {
		t.Errorf("PatchType set without a patch")
	}
	podYAML, err := yaml.JSONToYAML(result)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# allowed: %v\n# patched: %v\n", resp.Allowed, resp.Patch != nil)
	for _, w := range resp.Warnings {
		fmt.Fprintf(&b, "# warning: %s\n", w)
	}
	b.Write(podYAML)
	return b.Bytes()
}

// checkPortNames asserts what the API server would: port names at most 15
// characters and unique in the pod.
func checkPortNames(t *testing.T, raw []byte) {
	t.Helper()
	var pod corev1.Pod
	if err := json.Unmarshal(raw, &pod); err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == "" {
				continue
			}
			if len(p.Name) > 15 {
				t.Errorf("container %s: port name %q is longer than 15", c.Name, p.Name)
			}
			if other, dup := seen[p.Name]; dup {
				t.Errorf("port name %q in both %s and %s", p.Name, other, c.Name)
			}
			seen[p.Name] = c.Name
		}
	}
}
