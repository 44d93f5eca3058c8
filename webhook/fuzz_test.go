package webhook

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
)

// FuzzAdmission feeds arbitrary bodies through the review decoding, the
// injection and the patch computation. Nothing may panic, every decoded
// review gets a response, and a patch must apply to the object it was
// computed from.
func FuzzAdmission(f *testing.F) {
	cases, _ := filepath.Glob("testdata/*.yaml")
	var services ServiceSlice
	for _, c := range cases {
		raw, svcs := loadCase(f, c)
		services = append(services, svcs...)
		f.Add(reviewJSON(f, podRequest(raw)))
	}
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"shop","object":null}}`))
	f.Add([]byte(`{}`))
	if data, err := os.ReadFile("testdata/named-target-port.yaml"); err == nil {
		f.Add(data)
	}
	cfg := DefaultInjectConfig()
	inj := NewInjector(zap.NewNop(), services, cfg)
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeReview(body)
		if err != nil {
			return
		}
		resp := inj.Handle(context.Background(), req)
		if resp == nil {
			t.Fatal("no response")
		}
		if resp.Patch == nil {
			return
		}
		if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
			t.Fatal("patch without JSONPatch type")
		}
		p, err := jsonpatch.DecodePatch(resp.Patch)
		if err != nil {
			t.Fatalf("patch does not decode: %v", err)
		}
		out, err := p.Apply(req.Object.Raw)
		if err != nil {
			t.Fatalf("patch does not apply: %v\nobject %s\npatch %s", err, req.Object.Raw, resp.Patch)
		}
		if !json.Valid(out) {
			t.Fatal("patched object is not JSON")
		}
	})
}
