package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"go.uber.org/zap"

	"github.com/detour-dev/detour/agent/internal/nftrules"
	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/internal/logging"
	"github.com/detour-dev/detour/internal/version"
)

const usage = `detour-agent: the detour traffic agent (one image, one binary).

Usage:
  detour-agent run  [flags]   serve app traffic; pass it to the app or to intercepting clients
  detour-agent init [flags]   program nftables in the pod (redirect mode init container)
  detour-agent sleep          replace mode: the app container's process while replaced
  detour-agent install-sleeper DST   replace mode init container: copy this binary to DST
  detour-agent version        print the version

Run 'detour-agent <command> -h' for a command's flags.
`

// ErrUsage marks a command-line mistake; main exits with status 2 for it.
var ErrUsage = errors.New("usage error")

// usageError is a command-line mistake: its message is the mistake alone,
// and it matches ErrUsage.
type usageError struct{ err error }

func (e usageError) Error() string        { return e.err.Error() + " (see -h for the flags)" }
func (e usageError) Is(target error) bool { return target == ErrUsage }
func (e usageError) Unwrap() error        { return e.err }

func usageErrorf(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// Main runs the detour-agent command line; main() only sets up signals and
// exit codes. The logger is built here because its level is a flag.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageErrorf("no command given")
	}
	switch args[0] {
	case "run":
		return runCommand(ctx, args[1:], stderr)
	case "init":
		return initCommand(args[1:], stdout, stderr)
	case annotations.SleepCommand:
		return Sleep(ctx, stderr)
	case "install-sleeper":
		if len(args) != 2 {
			return usageErrorf("install-sleeper wants one argument: where to copy the agent binary")
		}
		return InstallSleeper(args[1])
	case "version":
		fmt.Fprintln(stdout, version.Version)
		return nil
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageErrorf("unknown command %q", args[0])
}

func newLogger(level string, w io.Writer) (*zap.Logger, error) {
	lvl, err := logging.ParseLevel(level)
	if err != nil {
		return nil, usageErrorf("%v", err)
	}
	return logging.New(w, lvl), nil
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

func runCommand(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, logLevel, err := parseRunFlags(args, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(logLevel, stderr)
	if err != nil {
		return err
	}
	defer log.Sync()
	a, err := New(cfg, log)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// parseRunFlags turns run's flags into a validated Config and the log
// level. The agent's egress ranges are flags only, never the environment:
// the webhook copies the app's variables into the agent, and an app's
// DETOUR_CLUSTER_CIDRS must not widen what clients may dial. (The one
// variable read, DETOUR_EGRESS_ALLOW, is set by the webhook after the
// app's, from the pod's annotation.)
func parseRunFlags(args []string, stderr io.Writer) (Config, string, error) {
	cfg := DefaultConfig()
	cfg.Version = version.Version
	fs := flag.NewFlagSet("detour-agent run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.TunnelAddr, "tunnel-addr", cfg.TunnelAddr, "where clients connect (through a port-forward); must be loopback")
	fs.StringVar(&cfg.RedirectAddr, "redirect-addr", "", "redirect mode: listen here for connections nftables redirected, e.g. :15001")
	redirectPorts := fs.String("redirect-ports", "", "redirect mode: app ports that nftables redirects, e.g. 8080,8443")
	listeners := fs.String("listen", "", "port-rename mode: LISTEN:APP pairs, e.g. 15080:8080,15443:8443")
	fs.StringVar(&cfg.AppHost, "app-host", cfg.AppHost, "where the app listens, seen from the agent")
	fs.StringVar(&cfg.HealthAddr, "health-addr", cfg.HealthAddr, "serve /healthz and /readyz here")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", cfg.MetricsAddr, "serve Prometheus /metrics here")
	fs.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", cfg.ShutdownGrace, "on SIGTERM, how long open connections may run on")
	fs.DurationVar(&cfg.Tunnel.KeepAliveInterval, "keepalive", cfg.Tunnel.KeepAliveInterval, "tunnel keep-alive interval; a silent client is dropped after about keepalive + write timeout")
	fs.DurationVar(&cfg.Tunnel.WriteTimeout, "write-timeout", cfg.Tunnel.WriteTimeout, "tunnel write and ping timeout")
	fs.StringVar(&cfg.PodName, "pod-name", os.Getenv("POD_NAME"), "pod name, reported to clients (default $POD_NAME)")
	fs.StringVar(&cfg.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "pod namespace, reported to clients (default $POD_NAMESPACE)")
	fs.StringVar(&cfg.TerminatingTLSDir, "terminating-tls-dir", annotations.TerminatingTLSMountPath, "http intercepts: terminate inbound TLS with tls.crt/tls.key from here, when present")
	fs.StringVar(&cfg.OriginatingTLSDir, "originating-tls-dir", annotations.OriginatingTLSMountPath, "http intercepts: speak TLS to the app with tls.crt/tls.key (and ca.crt) from here, when present")
	fs.StringVar(&cfg.PodIP, "pod-ip", os.Getenv("POD_IP"), "pod IP, reported to clients (default $POD_IP)")
	fs.StringVar(&cfg.ResolvConf, "resolv-conf", cfg.ResolvConf, "the pod's resolv.conf: its nameservers answer clients' DNS queries")
	clusterCIDRs := fs.String("cluster-cidrs", "", "pod and Service ranges clients may dial from the pod, comma-separated (the webhook passes what detour install detected)")
	egressAllow := fs.String("egress-allow", os.Getenv("DETOUR_EGRESS_ALLOW"), "further destinations clients may dial from the pod: CIDRs, or * (default $DETOUR_EGRESS_ALLOW, from the detour.dev/egress-allow annotation)")
	fs.DurationVar(&cfg.MaxIdle, "max-idle", 0, "ask to be removed after this long without a session or an intercept (the webhook's --agent-max-idle); 0: never")
	fs.DurationVar(&cfg.ReplacedGrace, "replaced-grace", 0, "replace mode (the webhook sets it): the app container sleeps; ask for it back after this long without an intercept; 0: not replaced")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parse(fs, args); err != nil {
		return cfg, "", err
	}
	var err error
	if cfg.Egress.ClusterCIDRs, _, err = ParsePrefixes(*clusterCIDRs, "--cluster-cidrs", false); err != nil {
		return cfg, "", usageError{err}
	}
	if cfg.Egress.Allow, cfg.Egress.AllowAll, err = ParsePrefixes(*egressAllow, "--egress-allow (annotation detour.dev/egress-allow)", true); err != nil {
		return cfg, "", usageError{err}
	}
	if cfg.RedirectPorts, err = parsePorts(*redirectPorts, "--redirect-ports"); err != nil {
		return cfg, "", err
	}
	if cfg.Listeners, err = parseListeners(*listeners); err != nil {
		return cfg, "", err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, "", usageError{err}
	}
	return cfg, *logLevel, nil
}

func initCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("detour-agent init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ports := fs.String("ports", "", "app ports whose inbound TCP connections go to the agent, e.g. 8080,8443 (required)")
	agentPort := fs.Uint("agent-port", 15001, "the agent's --redirect-addr port")
	probePorts := fs.String("probe-ports", "", "PROBE:APP pairs, e.g. 15100:8080: connections to PROBE go straight to the app's APP port, past the agent (the webhook points the kubelet's probes there, so a probe never reaches an intercepting workstation)")
	ipv6 := fs.Bool("ipv6", true, "also program the ip6 family: required when the pod has an IPv6 address, else best-effort (a warning if the node has no IPv6 NAT)")
	dryRun := fs.Bool("dry-run", false, "print the rules, change nothing")
	remove := fs.Bool("remove", false, "delete detour's tables instead")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *remove {
		conn, err := nftables.New()
		if err != nil {
			return fmt.Errorf("open netlink: %w", err)
		}
		return nftrules.Remove(conn, *ipv6)
	}
	appPorts, err := parsePorts(*ports, "--ports")
	if err != nil {
		return err
	}
	if *agentPort > 65535 {
		return usageErrorf("--agent-port %d is not a port", *agentPort)
	}
	probes, err := parseProbePorts(*probePorts)
	if err != nil {
		return err
	}
	opts := nftrules.Options{AppPorts: appPorts, AgentPort: uint16(*agentPort), ProbePorts: probes, IPv6: *ipv6}
	if *ipv6 && !*dryRun {
		if opts.IPv6Required, err = podHasIPv6(); err != nil {
			return err
		}
	}
	plan, err := nftrules.NewPlan(opts)
	if err != nil {
		return usageError{err}
	}
	if *dryRun {
		fmt.Fprint(stdout, plan)
		return nil
	}
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	skipped, err := nftrules.Apply(plan, conn)
	if err != nil {
		return err
	}
	for _, s := range skipped {
		fmt.Fprintf(stderr, "detour-agent init: warning: %s; the pod has no IPv6 address, so nothing bypasses the agent\n", s)
	}
	fmt.Fprintf(stdout, "detour-agent init: applied at %s\n%s", time.Now().UTC().Format(time.RFC3339), plan)
	return nil
}

// parseProbePorts reads --probe-ports: PROBE:APP pairs, comma-separated.
func parseProbePorts(s string) ([]nftrules.ProbePort, error) {
	var out []nftrules.ProbePort
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		probe, app, ok := strings.Cut(item, ":")
		pn, err1 := strconv.ParseUint(probe, 10, 16)
		an, err2 := strconv.ParseUint(app, 10, 16)
		if !ok || err1 != nil || err2 != nil {
			return nil, usageErrorf("--probe-ports %q: want PROBE:APP port pairs, e.g. 15100:8080", item)
		}
		out = append(out, nftrules.ProbePort{Port: uint16(pn), AppPort: uint16(an)})
	}
	return out, nil
}

// podHasIPv6 reports whether the pod's network namespace has a global IPv6
// address: then its ip6 rules are as necessary as its ip ones.
func podHasIPv6() (bool, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false, fmt.Errorf("list the pod's addresses: %w", err)
	}
	return hasGlobalIPv6(addrs), nil
}

func hasGlobalIPv6(addrs []net.Addr) bool {
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP)
		if ok && ip.Is6() && !ip.Is4In6() && ip.IsGlobalUnicast() {
			return true
		}
	}
	return false
}

func parsePorts(s, flagName string) ([]uint16, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []uint16
	for _, f := range strings.Split(s, ",") {
		p, err := strconv.ParseUint(strings.TrimSpace(f), 10, 16)
		if err != nil || p == 0 {
			return nil, usageErrorf("%s: %q is not a port (1..65535)", flagName, f)
		}
		out = append(out, uint16(p))
	}
	return out, nil
}

func parseListeners(s string) ([]PortMap, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []PortMap
	for _, pair := range strings.Split(s, ",") {
		l, a, ok := strings.Cut(strings.TrimSpace(pair), ":")
		lp, err1 := strconv.ParseUint(l, 10, 16)
		ap, err2 := strconv.ParseUint(a, 10, 16)
		if !ok || err1 != nil || err2 != nil || lp == 0 || ap == 0 {
			return nil, usageErrorf("--listen: %q is not LISTEN:APP (e.g. 15080:8080)", pair)
		}
		out = append(out, PortMap{Listen: uint16(lp), App: uint16(ap)})
	}
	return out, nil
}
