package agent

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/detour-dev/detour/tunnel"
)

// PortMap is one port-rename listener: the agent listens on Listen and
// passes traffic to the app's port App.
type PortMap struct {
	Listen uint16
	App    uint16
}

// Config is what the agent needs to run; see Validate for the rules.
type Config struct {
	// TunnelAddr is where clients connect. It must be a loopback address:
	// the port-forward is the access control.
	TunnelAddr string
	// RedirectAddr receives connections that nftables redirected; the
	// original port is read with SO_ORIGINAL_DST. Empty disables it.
	RedirectAddr string
	// RedirectPorts are the app ports that nftables redirects to RedirectAddr.
	RedirectPorts []uint16
	// Listeners are the port-rename mode's listeners.
	Listeners []PortMap
	// AppHost is where the app listens, from the agent's point of view.
	AppHost string
	// HealthAddr serves /healthz and /readyz; MetricsAddr serves /metrics.
	HealthAddr  string
	MetricsAddr string
	// ShutdownGrace bounds how long in-flight connections may run on after
	// shutdown starts; after it they are closed.
	ShutdownGrace time.Duration
	// DialTimeout bounds a dial to the app or a pod-local port.
	DialTimeout time.Duration
	// HelloTimeout bounds how long a new tunnel connection may take to say hello.
	HelloTimeout time.Duration
	Tunnel       tunnel.Config

	// TerminatingTLSDir and OriginatingTLSDir hold the mounted TLS Secrets
	// (tls.crt, tls.key, optionally ca.crt). A directory that does not
	// exist means the pod has no such Secret.
	TerminatingTLSDir string
	OriginatingTLSDir string

	Version   string
	PodName   string
	Namespace string
	PodIP     string

	// Egress says which destinations clients may dial from the pod
	// (egress.go); its nameservers come from ResolvConf.
	Egress Egress
	// ResolvConf is the pod's resolv.conf, whose nameservers answer the
	// clients' DNS queries.
	ResolvConf string
	// MaxClientStreams bounds the streams one client session may hold
	// open at once (dials, pod dials, DNS), and four times it those of
	// all sessions together; 0 is the default, 4096.
	MaxClientStreams int

	// MaxIdle, when positive, is how long the agent may go without a
	// session or an intercept before it asks to be removed (idle.go).
	MaxIdle time.Duration
	// ReplacedGrace, when positive, says the app container is replaced by
	// the sleeper (replace mode): the agent asks for the app back after
	// this long without an intercept (replace.go).
	ReplacedGrace time.Duration
}

// AgentStreamWindow is the agent's receive window per tunnel stream: what
// a client may have sent on one stream that the agent has not yet passed
// on. A slow cluster caller leaves up to this much buffered in the agent
// (up to twice as much memory: yamux buffers in a bytes.Buffer), so it
// bounds a session's buffered data per slow stream. Measured
// (TestSlowReadersBufferBounded): 30 slow readers hold 60 MiB with 1 MiB,
// 240 MiB with the 4 MiB the client uses, past the agent's 128 MiB limit.
// 1 MiB is still far above what a port-forward needs (docs/benchmarks.md).
const AgentStreamWindow = 1 << 20

func agentTunnelConfig() tunnel.Config {
	c := tunnel.DefaultConfig()
	c.StreamWindow = AgentStreamWindow
	return c
}

// DefaultConfig holds the defaults the detour-agent flags start from.
func DefaultConfig() Config {
	return Config{
		TunnelAddr:    "127.0.0.1:9900",
		AppHost:       "127.0.0.1",
		HealthAddr:    ":9901",
		MetricsAddr:   ":9902",
		ShutdownGrace: 10 * time.Second,
		DialTimeout:   5 * time.Second,
		HelloTimeout:  10 * time.Second,
		Tunnel:        agentTunnelConfig(),
		Version:       "dev",
		ResolvConf:    "/etc/resolv.conf",
	}
}

// Validate checks the configuration and says what to fix.
func (c Config) Validate() error {
	ap, err := netip.ParseAddrPort(c.TunnelAddr)
	if err != nil {
		return fmt.Errorf("tunnel address %q: want IP:PORT on loopback, e.g. 127.0.0.1:9900: %w", c.TunnelAddr, err)
	}
	if !ap.Addr().IsLoopback() {
		return fmt.Errorf("tunnel address %q is not a loopback address: the tunnel must only be reachable through a port-forward", c.TunnelAddr)
	}
	if c.RedirectAddr == "" && len(c.Listeners) == 0 {
		return fmt.Errorf("nothing to listen on: give a redirect address with redirect ports, or at least one port-rename listener")
	}
	if c.RedirectAddr != "" && len(c.RedirectPorts) == 0 {
		return fmt.Errorf("redirect address %q given without redirect ports: list the app ports that nftables redirects", c.RedirectAddr)
	}
	seen := map[uint16]string{}
	for _, p := range c.RedirectPorts {
		if p == 0 {
			return fmt.Errorf("redirect port 0 is not a port")
		}
		if seen[p] != "" {
			return fmt.Errorf("app port %d is listed twice", p)
		}
		seen[p] = "redirect"
	}
	listen := map[uint16]bool{}
	for _, m := range c.Listeners {
		if m.Listen == 0 || m.App == 0 {
			return fmt.Errorf("listener %d→%d: ports must be 1..65535", m.Listen, m.App)
		}
		if seen[m.App] != "" {
			return fmt.Errorf("app port %d is listed twice", m.App)
		}
		if listen[m.Listen] {
			return fmt.Errorf("listen port %d is listed twice", m.Listen)
		}
		seen[m.App] = "listener"
		listen[m.Listen] = true
	}
	if c.AppHost == "" {
		return fmt.Errorf("app host is empty: the agent must know where the app listens (normally 127.0.0.1)")
	}
	if c.ReplacedGrace < 0 {
		return fmt.Errorf("--replaced-grace %s: want 0 (not replaced) or a positive duration", c.ReplacedGrace)
	}
	if c.MaxIdle < 0 {
		return fmt.Errorf("--max-idle %s: want 0 (off) or a positive duration", c.MaxIdle)
	}
	if c.ShutdownGrace < 0 || c.DialTimeout <= 0 || c.HelloTimeout <= 0 {
		return fmt.Errorf("timeouts must be positive (shutdown grace %s, dial %s, hello %s)", c.ShutdownGrace, c.DialTimeout, c.HelloTimeout)
	}
	return c.Tunnel.Verify()
}

// appPorts lists every app port the agent serves, sorted.
func (c Config) appPorts() []uint16 {
	ports := slices.Clone(c.RedirectPorts)
	for _, m := range c.Listeners {
		ports = append(ports, m.App)
	}
	slices.Sort(ports)
	return ports
}
