package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

const testUID = "11111111-2222-3333-4444-555555555555"

func reviewJSON(t testing.TB, req *admissionv1.AdmissionRequest) []byte {
	t.Helper()
	r := admissionv1.AdmissionReview{Request: req}
	r.APIVersion, r.Kind = admissionReviewGVK.ToAPIVersionAndKind()
	b, err := json.Marshal(&r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func goldenPodRequest(t testing.TB, name string) ([]byte, *Injector) {
	t.Helper()
	raw, services := loadCase(t, "testdata/"+name+".yaml")
	return raw, testInjector(t, services)
}

// TestHTTPEdge sends bad and good requests through httptest: every bad one
// gets a clear 4xx (or a denial for a review the handler cannot use), never
// a crash, and the outcome counter says which.
func TestHTTPEdge(t *testing.T) {
	raw, inj := goldenPodRequest(t, "named-target-port")
	good := reviewJSON(t, podRequest(raw))
	noUID := podRequest(raw)
	noUID.UID = ""
	deployment := podRequest([]byte(`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"}}`))
	deployment.Kind = metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
	deployment.Resource = metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	v1beta1 := bytes.Replace(good, []byte(`"apiVersion":"admission.k8s.io/v1"`), []byte(`"apiVersion":"admission.k8s.io/v1beta1"`), 1)
	badPod := podRequest([]byte(`{"metadata":{"name":7}}`))
	update := podRequest(raw)
	update.Operation = admissionv1.Update

	for _, tc := range []struct {
		name        string
		method      string
		contentType string
		body        []byte
		wantCode    int
		wantBody    string // substring of the body (4xx) or of the denial message
		wantAllowed bool
		wantPatch   bool
		outcome     string
	}{
		{"good", http.MethodPost, "application/json", good, 200, "", true, true, outcomePatched},
		{"charset param ok", http.MethodPost, "application/json; charset=utf-8", good, 200, "", true, true, outcomePatched},
		{"update ignored", http.MethodPost, "application/json", reviewJSON(t, update), 200, "", true, false, outcomeAllowed},
		{"GET", http.MethodGet, "application/json", nil, 405, "want POST", false, false, outcomeBadRequest},
		{"wrong content type", http.MethodPost, "text/plain", good, 415, "want application/json", false, false, outcomeBadRequest},
		{"no content type", http.MethodPost, "", good, 415, "want application/json", false, false, outcomeBadRequest},
		{"oversized body", http.MethodPost, "application/json", bytes.Repeat([]byte(" "), MaxRequestBytes+1), 413, "body over", false, false, outcomeBadRequest},
		{"empty body", http.MethodPost, "application/json", nil, 400, "empty body", false, false, outcomeBadRequest},
		{"malformed JSON", http.MethodPost, "application/json", []byte(`{"apiVersion":`), 400, "decode admission review", false, false, outcomeBadRequest},
		{"not a review", http.MethodPost, "application/json", []byte(`{"apiVersion":"v1","kind":"Pod"}`), 400, "want admission.k8s.io/v1 AdmissionReview", false, false, outcomeBadRequest},
		{"v1beta1 review", http.MethodPost, "application/json", v1beta1, 400, "admissionReviewVersions: [v1]", false, false, outcomeBadRequest},
		{"no request", http.MethodPost, "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), 400, "no request", false, false, outcomeBadRequest},
		{"missing UID", http.MethodPost, "application/json", reviewJSON(t, noUID), 400, "no uid", false, false, outcomeBadRequest},
		{"non-pod object", http.MethodPost, "application/json", reviewJSON(t, deployment), 200, "handles pods", false, false, outcomeDenied},
		{"undecodable pod", http.MethodPost, "application/json", reviewJSON(t, badPod), 200, "decode pod", false, false, outcomeDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMetrics()
			h := NewHTTPHandler(zaptest.NewLogger(t), m, inj)
			r := httptest.NewRequest(tc.method, "/mutate-pods", bytes.NewReader(tc.body))
			if tc.contentType != "" {
				r.Header.Set("Content-Type", tc.contentType)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			body, _ := io.ReadAll(w.Result().Body)
			if w.Code != tc.wantCode {
				t.Fatalf("status %d, want %d; body %s", w.Code, tc.wantCode, body)
			}
			if got := testutil.ToFloat64(m.outcomes.WithLabelValues(tc.outcome)); got != 1 {
				t.Errorf("outcome %q counted %v times, want 1", tc.outcome, got)
			}
			if testutil.CollectAndCount(m.latency) != 1 {
				t.Errorf("latency histogram not observed")
			}
			if w.Code != http.StatusOK {
				if !strings.Contains(string(body), tc.wantBody) {
					t.Errorf("body %q lacks %q", body, tc.wantBody)
				}
				return
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("response content type %q", ct)
			}
			var review admissionv1.AdmissionReview
			if err := json.Unmarshal(body, &review); err != nil {
				t.Fatalf("decode response: %v", err)
			}
			if review.APIVersion != "admission.k8s.io/v1" || review.Kind != "AdmissionReview" || review.Response == nil {
				t.Fatalf("response is not an admission/v1 review: %s", body)
			}
			resp := review.Response
			if resp.UID != testUID {
				t.Errorf("UID %q not echoed", resp.UID)
			}
			if resp.Allowed != tc.wantAllowed || (resp.Patch != nil) != tc.wantPatch || (resp.PatchType != nil) != tc.wantPatch {
				t.Errorf("allowed=%v patch=%v patchType=%v; want allowed=%v patch=%v", resp.Allowed, resp.Patch != nil, resp.PatchType, tc.wantAllowed, tc.wantPatch)
			}
			if !tc.wantAllowed {
				if resp.Result == nil || resp.Result.Code != 400 || !strings.Contains(resp.Result.Message, tc.wantBody) {
					t.Errorf("denial %+v, want code 400 mentioning %q", resp.Result, tc.wantBody)
				}
			}
		})
	}
}

// TestHTTPPanic: a panicking handler gives a 500 and is counted, and the
// server goes on.
func TestHTTPPanic(t *testing.T) {
	m := NewMetrics()
	h := NewHTTPHandler(zaptest.NewLogger(t), m, HandlerFunc(func(context.Context, *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
		panic("boom")
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	raw, _ := goldenPodRequest(t, "not-annotated")
	for range 2 {
		resp, err := http.Post(srv.URL, "application/json", bytes.NewReader(reviewJSON(t, podRequest(raw))))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusInternalServerError {
			t.Fatalf("status %d, want 500", resp.StatusCode)
		}
	}
	if got := testutil.ToFloat64(m.outcomes.WithLabelValues(outcomePanic)); got != 2 {
		t.Errorf("panics counted %v, want 2", got)
	}
}

// TestHandlerNilResponse: a handler that forgets to answer yields a denial
// with the UID, not a nil dereference.
func TestHandlerNilResponse(t *testing.T) {
	h := NewHTTPHandler(zaptest.NewLogger(t), NewMetrics(), HandlerFunc(func(context.Context, *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse { return nil }))
	req := &admissionv1.AdmissionRequest{UID: testUID, Kind: podKind, Object: runtime.RawExtension{Raw: []byte(`{}`)}}
	r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(reviewJSON(t, req)))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(w.Body.Bytes(), &review); err != nil || review.Response == nil {
		t.Fatalf("decode: %v %s", err, w.Body)
	}
	if review.Response.Allowed || review.Response.UID != testUID || review.Response.Result.Code != 500 {
		t.Errorf("got %+v", review.Response)
	}
}

// TestLiveServicesFallback: a Service missing from the cache (created a
// moment before the pod) is found by asking live.
func TestLiveServicesFallback(t *testing.T) {
	raw, services := loadCase(t, "testdata/named-target-port.yaml")
	inj := NewInjector(zaptest.NewLogger(t), ServiceSlice(nil), DefaultInjectConfig())
	if resp := inj.Handle(context.Background(), podRequest(raw)); resp.Patch != nil || len(resp.Warnings) != 1 {
		t.Fatalf("without services: patch=%v warnings=%q; want a warning and no patch", resp.Patch != nil, resp.Warnings)
	}
	inj.WithLiveServices(ServiceSlice(services))
	if resp := inj.Handle(context.Background(), podRequest(raw)); resp.Patch == nil {
		t.Fatalf("with live services: no patch; warnings %q", resp.Warnings)
	}
}
