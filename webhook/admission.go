package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/mattbaird/jsonpatch"
	"go.uber.org/zap"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/detour-dev/detour/internal/annotations"
)

// Handler answers one admission request. Implementations must return a
// response for every request; the HTTP edge sets its UID.
type Handler interface {
	Handle(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	return f(ctx, req)
}

// ServiceLister lists the Services of a namespace; the webhook's is backed
// by an informer cache, tests use a slice.
type ServiceLister interface {
	ListServices(ctx context.Context, namespace string) ([]corev1.Service, error)
}

// ServiceSlice is a ServiceLister over a fixed set of Services.
type ServiceSlice []corev1.Service

// ListServices returns the Services of namespace.
func (s ServiceSlice) ListServices(_ context.Context, namespace string) ([]corev1.Service, error) {
	var out []corev1.Service
	for _, svc := range s {
		if svc.Namespace == namespace || svc.Namespace == "" {
			out = append(out, svc)
		}
	}
	return out, nil
}

// Injector is the pod injection Handler.
type Injector struct {
	log      *zap.Logger
	services ServiceLister
	live     ServiceLister
	cfg      InjectConfig
}

// WithLiveServices makes the Injector ask live, straight from the API
// server, when the (cached) ServiceLister finds no port for a pod: a Service
// created a moment before its Deployment may not be in the cache yet.
func (i *Injector) WithLiveServices(live ServiceLister) *Injector {
	i.live = live
	return i
}

// NewInjector returns the Handler that injects the agent into pods.
func NewInjector(log *zap.Logger, services ServiceLister, cfg InjectConfig) *Injector {
	return &Injector{log: log, services: services, cfg: cfg}
}

var (
	podKind     = metav1.GroupVersionKind{Group: "", Version: "v1", Kind: "Pod"}
	podResource = metav1.GroupVersionResource{Group: "", Version: "v1", Resource: "pods"}
)

// Handle decides, injects and answers with a JSON patch. It never blocks a
// pod over an injection problem: the pod is admitted without the agent and
// the reason is sent back as a warning (kubectl shows it) and logged.
func (i *Injector) Handle(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Kind != podKind || req.SubResource != "" {
		return deny(http.StatusBadRequest, fmt.Errorf("%w: the detour webhook handles pods, got %s %s/%s", ErrNotPod, req.Kind.Kind, req.Resource.Resource, req.SubResource))
	}
	if req.Operation != admissionv1.Create {
		return allow()
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return deny(http.StatusBadRequest, fmt.Errorf("%w: decode pod: %w", ErrBadRequest, err))
	}
	log := i.log.With(zap.String("namespace", req.Namespace), zap.String("pod", podName(&pod)), zap.String("uid", string(req.UID)))
	ok, reason := shouldInject(&pod, req.Namespace)
	if !ok {
		// Most pods never opted in: that is only worth a debug line. An
		// opted-in pod that is skipped deserves an explanation.
		lvl := zap.InfoLevel
		if reason == reasonNotAnnotated || reason == reasonExcludedNamespace {
			lvl = zap.DebugLevel
		}
		log.Log(lvl, "not injecting", zap.String("reason", reason))
		return allow()
	}
	services, err := i.services.ListServices(ctx, req.Namespace)
	if err != nil {
		log.Warn("not injecting: cannot list services", zap.Error(err))
		return allow(fmt.Sprintf("detour: agent not injected: list services: %v", err))
	}
	mutated, err := inject(&pod, services, i.cfg)
	if errors.Is(err, ErrNoPorts) && i.live != nil {
		if services, lerr := i.live.ListServices(ctx, req.Namespace); lerr == nil {
			mutated, err = inject(&pod, services, i.cfg)
		}
	}
	if err != nil {
		log.Warn("not injecting", zap.Error(err))
		return allow(fmt.Sprintf("detour: agent not injected: %v", err))
	}
	patch, err := createPatch(req.Object.Raw, mutated)
	if err != nil {
		log.Error("not injecting: cannot compute the patch", zap.Error(err))
		return allow(fmt.Sprintf("detour: agent not injected: %v", err))
	}
	log.Info("injected", zap.String("status", mutated.Annotations[annotations.Injected]))
	resp := allow()
	if patch != nil {
		pt := admissionv1.PatchTypeJSONPatch
		resp.PatchType, resp.Patch = &pt, patch
	}
	return resp
}

// createPatch diffs the mutated pod against the raw request object, both
// without ManagedFields (slow to diff and never ours to change). It returns
// nil when nothing changed.
func createPatch(raw []byte, mutated *corev1.Pod) (patch []byte, err error) {
	original, err := withoutManagedFields(raw)
	if err != nil {
		return nil, err
	}
	m := *mutated
	m.ManagedFields = nil
	modified, err := json.Marshal(&m)
	if err != nil {
		return nil, fmt.Errorf("encode mutated pod: %w", err)
	}
	// jsonpatch asserts types while it walks; a document shape it did not
	// expect must not take the webhook down.
	defer func() {
		if r := recover(); r != nil {
			patch, err = nil, fmt.Errorf("compute patch: %v", r)
		}
	}()
	ops, err := jsonpatch.CreatePatch(original, modified)
	if err != nil {
		return nil, fmt.Errorf("compute patch: %w", err)
	}
	if len(ops) == 0 {
		return nil, nil
	}
	patch, err = json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("encode patch: %w", err)
	}
	return patch, nil
}

// withoutManagedFields drops metadata.managedFields from a raw object.
func withoutManagedFields(raw []byte) ([]byte, error) {
	if !bytes.Contains(raw, []byte(`"managedFields"`)) {
		return raw, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("decode object: %w", err)
	}
	var meta map[string]json.RawMessage
	if err := json.Unmarshal(obj["metadata"], &meta); err != nil {
		return nil, fmt.Errorf("decode metadata: %w", err)
	}
	delete(meta, "managedFields")
	var err error
	if obj["metadata"], err = json.Marshal(meta); err != nil {
		return nil, fmt.Errorf("encode metadata: %w", err)
	}
	return json.Marshal(obj)
}

func podName(p *corev1.Pod) string {
	if p.Name != "" {
		return p.Name
	}
	return p.GenerateName + "*"
}

func allow(warnings ...string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Allowed: true, Warnings: warnings}
}

func deny(code int32, err error) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{
		Allowed: false,
		Result:  &metav1.Status{Status: metav1.StatusFailure, Code: code, Message: err.Error(), Reason: metav1.StatusReasonBadRequest},
	}
}
