package agent

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/detour-dev/detour/tunnel"
)

// Routes a connection can take.
const (
	routeApp    = "app"
	routeClient = "client"
	routeHTTP   = "http" // a connection served by the HTTP router: each request is routed on its own
)

type metrics struct {
	connections   *prometheus.CounterVec // by route
	active        *prometheus.GaugeVec   // by route
	bytes         *prometheus.CounterVec // by route, direction
	failOpen      prometheus.Counter
	rejected      *prometheus.CounterVec // by reason
	sessions      prometheus.Gauge
	intercepts    *prometheus.GaugeVec // by mechanism
	dialPod       *prometheus.CounterVec
	sessionEnds   *prometheus.CounterVec // by reason
	interceptOps  *prometheus.CounterVec // by op, outcome
	appDialErrors prometheus.Counter

	httpRequests    *prometheus.CounterVec // by route
	httpProxyErrors *prometheus.CounterVec // by route
	httpUnroutable  prometheus.Counter
	h2cStreams      *prometheus.CounterVec // by path: relay or fallback
	reconnects      prometheus.Counter

	egress     *prometheus.CounterVec // by network, outcome, rule
	udpDropped prometheus.Counter
	dnsQueries *prometheus.CounterVec // by outcome (rcode)

	mirrorCopies *prometheus.CounterVec // by mechanism, outcome
}

// newMetrics registers the agent's metrics; lend is the h2c relays' pool,
// read by a gauge.
func newMetrics(reg prometheus.Registerer, lend *h2LendPool) *metrics {
	m := &metrics{
		connections:     counterVec("detour_agent_connections_total", "Inbound app connections accepted, by where they were routed (app or client).", "route"),
		active:          gaugeVec("detour_agent_connections_active", "Inbound app connections open now, by route.", "route"),
		bytes:           counterVec("detour_agent_bytes_total", "Bytes relayed, by route and direction (in = from the cluster client, out = towards it). Counted when a connection ends.", "route", "direction"),
		failOpen:        counter("detour_agent_fail_open_total", "Connections for an intercepted port sent to the app because the client could not be reached."),
		rejected:        counterVec("detour_agent_rejected_connections_total", "Inbound connections closed without routing, by reason.", "reason"),
		sessions:        gauge("detour_agent_sessions_active", "Client tunnel sessions connected now."),
		intercepts:      gaugeVec("detour_agent_intercepts_active", "Active intercepts, by mechanism.", "mechanism"),
		dialPod:         counterVec("detour_agent_pod_dials_total", "Client dials of pod-local ports, by outcome.", "outcome"),
		sessionEnds:     counterVec("detour_agent_session_ends_total", "Tunnel sessions ended, by reason.", "reason"),
		interceptOps:    counterVec("detour_agent_intercept_requests_total", "Create and remove requests, by operation and outcome (ok or the error code).", "op", "outcome"),
		appDialErrors:   counter("detour_agent_app_dial_errors_total", "Failed dials to the app (is it listening on 127.0.0.1?)."),
		httpRequests:    counterVec("detour_agent_http_requests_total", "Requests on ports with http intercepts, by where they were routed (app or client).", "route"),
		httpProxyErrors: counterVec("detour_agent_http_proxy_errors_total", "Requests answered 502 because their destination (app or client) failed, by route.", "route"),
		reconnects:      counter("detour_agent_session_reconnects_total", "Tunnel sessions opened by a client (id and user) that had connected to this agent before: reconnects after a dropped port-forward, a restarted daemon or a sleep."),
		egress:          counterVec("detour_agent_egress_dials_total", "Client dials from the pod's network (a local process's cluster network), by network, outcome (ok, denied, refused, timeout, unreachable, bad_header, busy: past the session's stream bound) and the egress rule that decided.", "network", "outcome", "rule"),
		udpDropped:      counter("detour_agent_egress_udp_dropped_total", "UDP datagrams dropped on dial streams because a bounded queue was full or the socket refused them."),
		dnsQueries:      counterVec("detour_agent_dns_queries_total", "Client DNS queries answered with the pod's nameservers, by outcome (the answer's rcode, or unanswered, no_nameserver, bad_query, busy: a stream past the session's bound).", "outcome"),
		h2cStreams:      counterVec("detour_agent_http_h2c_streams_total", "Requests of h2c callers on ports whose app speaks h2c, by path: relay (passed on by the agent's h2c relay itself) or fallback (handed to its net/http server: preview links, mirrored ports, local processes not speaking h2c, unusual requests).", "path"),
		httpUnroutable:  counter("detour_agent_http_unroutable_connections_total", "Connections on ports with http intercepts that were not HTTP (or TLS without a terminating certificate), passed to the app unrouted."),
		mirrorCopies:    counterVec("detour_agent_mirror_copies_total", "Copies made for mirrors, by mechanism (tcp-mirror: connections, http-mirror: requests) and outcome: copied (sent whole), or why it was dropped (queue_full, busy, cut, too_large, incomplete, upgrade, failed).", "mechanism", "outcome"),
	}
	reg.MustRegister(m.connections, m.active, m.bytes, m.failOpen, m.rejected, m.sessions,
		m.intercepts, m.dialPod, m.sessionEnds, m.interceptOps, m.appDialErrors,
		m.httpRequests, m.httpProxyErrors, m.httpUnroutable, m.h2cStreams, m.reconnects,
		m.egress, m.udpDropped, m.dnsQueries, m.mirrorCopies)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "detour_agent_http_h2c_lent_bytes",
		Help: fmt.Sprintf("Bytes the h2c relays hold for slow readers and have acknowledged on their connections before writing them on (at most %d MiB for the agent, %d MiB per connection).", h2AgentLend>>20, h2PeerLend>>20),
	}, func() float64 { return float64(h2AgentLend - lend.avail.Load()) }))
	for _, mech := range tunnel.Mechanisms {
		m.intercepts.WithLabelValues(mech).Set(0)
	}
	return m
}

func counter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
}

func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

func gauge(name, help string) prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
}

func gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
}
