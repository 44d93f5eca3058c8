package agent

import (
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

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "detour_agent_connections_total",
			Help: "Inbound app connections accepted, by where they were routed (app or client).",
		}, []string{"route"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "detour_agent_connections_active",
			Help: "Inbound app connections open now, by route.",
		}, []string{"route"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "detour_agent_bytes_total",
			Help: "Bytes relayed, by route and direction (in = from the cluster client, out = towards it). Counted when a connection ends.",
		}, []string{"route", "direction"}),
		failOpen: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "detour_agent_fail_open_total",
			Help: "Connections for an intercepted port sent to the app because the client could not be reached.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "detour_agent_rejected_connections_total",
			Help: "Inbound connections closed without routing, by reason.",
		}, []string{"reason"}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "detour_agent_sessions_active",
			Help: "Client tunnel sessions connected now.",
		}),
		intercepts: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "detour_agent_intercepts_active",
			Help: "Active intercepts, by mechanism.",
		}, []string{"mechanism"}),
		dialPod: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "detour_agent_pod_dials_total",
			Help: "Client dials of pod-local ports, by outcome.",
		}, []string{"outcome"}),
		sessionEnds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "detour_agent_session_ends_total",
			Help: "Tunnel sessions ended, by reason.",
		}, []string{"reason"}),
		interceptOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "detour_agent_intercept_requests_total",
			Help: "Create and remove requests, by operation and outcome (ok or the error code).",
		}, []string{"op", "outcome"}),
		appDialErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "detour_agent_app_dial_errors_total",
			Help: "Failed dials to the app (is it listening on 127.0.0.1?).",
		}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "detour_agent_http_requests_total",
			Help: "Requests on ports with http intercepts, by where they were routed (app or client).",
		}, []string{"route"}),
		httpProxyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "detour_agent_http_proxy_errors_total",
			Help: "Requests answered 502 because their destination (app or client) failed, by route.",
		}, []string{"route"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "detour_agent_session_reconnects_total",
			Help: "Tunnel sessions opened by a client (id and user) that had connected to this agent before: reconnects after a dropped port-forward, a restarted daemon or a sleep.",
		}),
		egress: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "detour_agent_egress_dials_total",
			Help: "Client dials from the pod's network (a local process's cluster network), by network, outcome (ok, denied, refused, timeout, unreachable, bad_header) and the egress rule that decided.",
		}, []string{"network", "outcome", "rule"}),
		udpDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "detour_agent_egress_udp_dropped_total",
			Help: "UDP datagrams dropped on dial streams because a bounded queue was full or the socket refused them.",
		}),
		dnsQueries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "detour_agent_dns_queries_total",
			Help: "Client DNS queries answered with the pod's nameservers, by outcome (the answer's rcode, or unanswered, no_nameserver, bad_query).",
		}, []string{"outcome"}),
		h2cStreams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "detour_agent_http_h2c_streams_total",
			Help: "Requests of h2c callers on ports whose app speaks h2c, by path: relay (passed on by the agent's h2c relay itself) or fallback (handed to its net/http server: preview links, mirrored ports, local processes not speaking h2c, unusual requests).",
		}, []string{"path"}),
		httpUnroutable: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "detour_agent_http_unroutable_connections_total",
			Help: "Connections on ports with http intercepts that were not HTTP (or TLS without a terminating certificate), passed to the app unrouted.",
		}),
	}
	reg.MustRegister(m.connections, m.active, m.bytes, m.failOpen, m.rejected, m.sessions,
		m.intercepts, m.dialPod, m.sessionEnds, m.interceptOps, m.appDialErrors,
		m.httpRequests, m.httpProxyErrors, m.httpUnroutable, m.h2cStreams, m.reconnects,
		m.egress, m.udpDropped, m.dnsQueries)
	for _, mech := range tunnel.Mechanisms {
		m.intercepts.WithLabelValues(mech).Set(0)
	}
	m.mirrorCopies = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "detour_agent_mirror_copies_total",
		Help: "Copies made for mirrors, by mechanism (tcp-mirror: connections, http-mirror: requests) and outcome: copied (sent whole), or why it was dropped (queue_full, busy, cut, too_large, incomplete, upgrade, failed).",
	}, []string{"mechanism", "outcome"})
	reg.MustRegister(m.mirrorCopies)
	return m
}
