package webhook

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Outcomes of an admission request, the label of admissions_total.
const (
	outcomePatched    = "patched"     // allowed with the agent
	outcomeAllowed    = "allowed"     // allowed untouched (not opted in, skipped)
	outcomeWarned     = "warned"      // allowed untouched with a warning (opted in, injection failed)
	outcomeDenied     = "denied"      // a review the handler refused (not a pod, undecodable)
	outcomeBadRequest = "bad_request" // rejected at the HTTP edge
	outcomePanic      = "panic"
)

// Metrics are the webhook's Prometheus metrics, in their own registry.
type Metrics struct {
	Registry     *prometheus.Registry
	latency      prometheus.Histogram
	outcomes     *prometheus.CounterVec
	certExpiry   prometheus.Gauge
	idleRemovals *prometheus.CounterVec
	// replaceRestores: workloads the replace restorer gave their app back.
	replaceRestores *prometheus.CounterVec
}

// NewMetrics registers the webhook's metrics, plus the Go and process
// collectors, in a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "detour", Subsystem: "webhook", Name: "admission_duration_seconds",
			Help:    "Time to answer an admission review, from the request body read to the response written.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .5, 1},
		}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "detour", Subsystem: "webhook", Name: "admissions_total",
			Help: "Admission reviews by outcome: patched, allowed, warned, denied, bad_request, panic.",
		}, []string{"outcome"}),
		certExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "detour", Subsystem: "webhook", Name: "certificate_expiry_timestamp_seconds",
			Help: "When the serving certificate in use expires (Unix seconds).",
		}),
	}
	m.idleRemovals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "detour", Subsystem: "webhook", Name: "idle_removals_total",
		Help: "Workloads whose detour.dev/inject the idle reaper removed (every agent idle for --agent-max-idle), by kind.",
	}, []string{"kind"})
	m.replaceRestores = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "detour", Subsystem: "webhook", Name: "replace_restores_total",
		Help: "Replaced workloads whose detour.dev/replace the restorer removed (every agent unheld for its grace period: the workstation went away without a leave), by kind.",
	}, []string{"kind"})
	m.Registry.MustRegister(m.latency, m.outcomes, m.certExpiry, m.idleRemovals, m.replaceRestores,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, o := range []string{outcomePatched, outcomeAllowed, outcomeWarned, outcomeDenied, outcomeBadRequest, outcomePanic} {
		m.outcomes.WithLabelValues(o)
	}
	return m
}

// ReplaceRestored counts one replaced workload given its app back by the
// restorer.
func (m *Metrics) ReplaceRestored(w WorkloadRef) { m.replaceRestores.WithLabelValues(w.Kind).Inc() }

// IdleRemoved counts one workload un-annotated by the idle reaper.
func (m *Metrics) IdleRemoved(w WorkloadRef) { m.idleRemovals.WithLabelValues(w.Kind).Inc() }
