package webhook

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
)

// BenchmarkAdmission admits a typical pod (a Deployment's pod with env,
// envFrom and probes, one named Service port) in process through the HTTP
// handler, and reports the p99 latency; the target is ≤ 2 ms.
func BenchmarkAdmission(b *testing.B) {
	raw, services := loadCase(b, "testdata/envfrom-configmap-secret.yaml")
	h := NewHTTPHandler(zap.NewNop(), NewMetrics(), NewInjector(zap.NewNop(), ServiceSlice(services), DefaultInjectConfig()))
	body := reviewJSON(b, podRequest(raw))
	durations := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		r := httptest.NewRequest(http.MethodPost, "/mutate-pods", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		durations = append(durations, time.Since(start))
		if w.Code != http.StatusOK || !bytes.Contains(w.Body.Bytes(), []byte(`"patchType":"JSONPatch"`)) {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
	b.StopTimer()
	slices.Sort(durations)
	p := func(q float64) float64 {
		return float64(durations[min(len(durations)-1, int(q*float64(len(durations))))].Microseconds()) / 1000
	}
	b.ReportMetric(p(0.50), "p50-ms")
	b.ReportMetric(p(0.99), "p99-ms")
}
