package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"time"

	"go.uber.org/zap"
	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// MaxRequestBytes bounds an admission request body. etcd caps an object at
// 1.5 MiB; the review wraps the object (and, for updates, the old one too) in
// JSON that can take about twice the bytes of its protobuf form, so 7 MiB
// holds any real review (controller-runtime's bound) while a runaway or
// hostile body cannot make the webhook allocate without limit.
const MaxRequestBytes = 7 << 20

var admissionReviewGVK = admissionv1.SchemeGroupVersion.WithKind("AdmissionReview")

// httpError is a request the edge refuses, with its status code.
type httpError struct {
	code int
	err  error
}

func (e *httpError) Error() string { return e.err.Error() }
func (e *httpError) Unwrap() error { return e.err }

func badRequest(code int, format string, a ...any) *httpError {
	return &httpError{code: code, err: fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, a...))}
}

// NewHTTPHandler serves admission/v1 reviews to h: POST only, application/json
// only, at most MaxRequestBytes, the request UID always echoed, and a panic
// in h answered with a 500 instead of a dead webhook.
func NewHTTPHandler(log *zap.Logger, metrics *Metrics, h Handler) http.Handler {
	return &admissionHTTP{log: log, metrics: metrics, handler: h}
}

type admissionHTTP struct {
	log     *zap.Logger
	metrics *Metrics
	handler Handler
}

func (a *admissionHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	outcome := outcomePanic
	defer func() {
		a.metrics.latency.Observe(time.Since(start).Seconds())
		a.metrics.outcomes.WithLabelValues(outcome).Inc()
	}()
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			a.log.Error("admission handler panicked", zap.Any("panic", v), zap.Stack("stack"))
			http.Error(w, "internal error", http.StatusInternalServerError)
		}
	}()

	req, err := readReview(r)
	if err != nil {
		outcome = outcomeBadRequest
		var he *httpError
		code := http.StatusBadRequest
		if errors.As(err, &he) {
			code = he.code
		}
		a.log.Info("bad admission request", zap.Int("code", code), zap.Error(err))
		http.Error(w, err.Error(), code)
		return
	}
	resp := a.handler.Handle(r.Context(), req)
	if resp == nil {
		resp = deny(http.StatusInternalServerError, errors.New("handler returned no response"))
	}
	resp.UID = req.UID
	switch {
	case !resp.Allowed:
		outcome = outcomeDenied
	case resp.Patch != nil:
		outcome = outcomePatched
	case len(resp.Warnings) > 0:
		outcome = outcomeWarned
	default:
		outcome = outcomeAllowed
	}
	out := admissionv1.AdmissionReview{Response: resp}
	out.APIVersion, out.Kind = admissionReviewGVK.ToAPIVersionAndKind()
	body, err := json.Marshal(&out)
	if err != nil {
		outcome = outcomePanic
		a.log.Error("encode admission response", zap.Error(err))
		http.Error(w, "encode response", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if _, err := w.Write(body); err != nil {
		a.log.Debug("write admission response", zap.Error(err))
	}
}

// readReview checks the request and decodes its admission/v1 review.
func readReview(r *http.Request) (*admissionv1.AdmissionRequest, error) {
	if r.Method != http.MethodPost {
		return nil, badRequest(http.StatusMethodNotAllowed, "method %s: want POST", r.Method)
	}
	ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || ct != "application/json" {
		return nil, badRequest(http.StatusUnsupportedMediaType, "content type %q: want application/json", r.Header.Get("Content-Type"))
	}
	if r.Body == nil {
		return nil, badRequest(http.StatusBadRequest, "empty body")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxRequestBytes+1))
	if err != nil {
		return nil, badRequest(http.StatusBadRequest, "read body: %v", err)
	}
	if len(body) > MaxRequestBytes {
		return nil, badRequest(http.StatusRequestEntityTooLarge, "body over %d bytes", MaxRequestBytes)
	}
	return decodeReview(body)
}

// decodeReview decodes an admission/v1 AdmissionReview holding a request.
func decodeReview(body []byte) (*admissionv1.AdmissionRequest, error) {
	if len(body) == 0 {
		return nil, badRequest(http.StatusBadRequest, "empty body")
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		return nil, badRequest(http.StatusBadRequest, "decode admission review: %v", err)
	}
	if gvk := schema.FromAPIVersionAndKind(review.APIVersion, review.Kind); gvk != admissionReviewGVK {
		return nil, badRequest(http.StatusBadRequest, "got %s %s: want admission.k8s.io/v1 AdmissionReview (admissionReviewVersions: [v1])", review.APIVersion, review.Kind)
	}
	if review.Request == nil {
		return nil, badRequest(http.StatusBadRequest, "admission review has no request")
	}
	if review.Request.UID == "" {
		return nil, badRequest(http.StatusBadRequest, "admission request has no uid")
	}
	return review.Request, nil
}
