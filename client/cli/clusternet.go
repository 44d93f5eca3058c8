package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/client/internal/clusternet"
	"github.com/detour-dev/detour/client/internal/kube"
	"github.com/detour-dev/detour/client/internal/netstack"
	"github.com/detour-dev/detour/client/internal/nsexec"
	"github.com/detour-dev/detour/client/internal/resolve"
	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/tunnel"
)

// clusterNetFlags are the flags of a command that runs CMD with the pod's
// view of the cluster (intercept -- CMD, run, shell).
type clusterNetFlags struct {
	enabled   bool
	expose    []uint
	alsoProxy []string
}

func addClusterNetFlags(fl *pflag.FlagSet, f *clusterNetFlags, withSwitch bool) {
	if withSwitch {
		fl.BoolVar(&f.enabled, "cluster-network", true, "with -- CMD: run CMD with the pod's view of the cluster (its DNS and Services, dialled from the pod); false runs CMD on the workstation's network")
	}
	fl.UintSliceVar(&f.expose, "expose", nil, "make a port CMD listens on reachable at the workstation's 127.0.0.1:PORT (repeatable), e.g. a debugger's")
	fl.StringSliceVar(&f.alsoProxy, "also-proxy", nil, "send connections to this CIDR through the pod too (repeatable); the agent still applies the workload's egress rules")
}

// clusterNet is what running CMD in the cluster's network needs.
type clusterNet struct {
	rc       *rest.Config
	cs       kubernetes.Interface
	workload resolve.Workload
	command  []string
	env      map[string]string // the app's environment, over ours; nil: ask the agent
	inbound  []uint16          // the intercept's local port: the daemon dials it on 127.0.0.1
	flags    clusterNetFlags
}

// runInClusterNetwork runs CMD in its own namespaces with the pod's view
// of the cluster and returns CMD's exit status.
func (a *app) runInClusterNetwork(ctx context.Context, c clusterNet) (int, error) {
	also, ports, err := c.flags.parse()
	if err != nil {
		return 0, err
	}
	view, err := readPodView(ctx, c.cs, c.workload, true)
	if err != nil {
		return 0, err
	}
	printNotes(a.errOut, view.notes)
	return RunClusterNetwork(ctx, ClusterRun{
		Connect: a.agentConnector(c), What: c.workload.Ref(), Command: c.command, Env: c.env, UserEnv: view.env, Trees: view.trees,
		Refresh: view.refresh, RefreshEvery: view.refreshEvery,
		Ports: ports, Inbound: c.inbound, AlsoProxy: also, Stderr: a.errOut,
	})
}

// ClusterRun is one command to run with a pod's view of the cluster.
type ClusterRun struct {
	// Connect opens a tunnel session with the pod's agent; it is called
	// again when the session is lost.
	Connect func(ctx context.Context) (*client.Session, error)
	What    string // the workload, for messages
	Command []string
	// Env is the app's environment as the agent reports it, set over
	// ours; nil asks the agent. UserEnv, read with the user's own
	// permissions (Secret-backed values among them), goes over it.
	Env     map[string]string
	UserEnv map[string]string
	// Trees are the pod's files, shown at their real paths. Every
	// RefreshEvery (when both are set), Refresh reads them again and CMD
	// sees the new contents at the same paths: its service-account token
	// stays valid however long it runs.
	Trees        []nsexec.Tree
	Refresh      func(ctx context.Context) ([]nsexec.Tree, error)
	RefreshEvery time.Duration
	// Ports CMD listens on (inside its namespace) that the workstation's
	// 127.0.0.1:PORT reaches (--expose): each must be free there.
	Ports []uint16
	// Inbound are the intercept's local ports, where the daemon delivers
	// intercepted connections: exposed like Ports when free; when a
	// process on the workstation already serves one, it keeps getting
	// them (a note says so).
	Inbound   []uint16
	AlsoProxy []netip.Prefix
	Stderr    io.Writer
}

// RunClusterNetwork runs r.Command in its own unprivileged namespaces,
// behind a userspace TCP/IP stack that sends cluster destinations through
// the agent, and returns its exit status.
func RunClusterNetwork(ctx context.Context, r ClusterRun) (int, error) {
	link := clusternet.NewSessionLink(r.Connect)
	defer link.Close()
	netw, env, err := prepareNetwork(ctx, link, r)
	if err != nil {
		return 0, err
	}
	lns, err := listenExposed(r.Ports)
	if err != nil {
		return 0, err
	}
	lns = append(lns, listenInbound(r.Inbound, r.Stderr)...)
	defer closeAll(lns)
	ns, err := nsexec.Start(nsexec.Options{Command: r.Command, Env: commandEnv(mergeEnv(env, r.UserEnv)), Trees: r.Trees,
		Files: map[string][]byte{"/etc/resolv.conf": netw.ResolvConf()}})
	if errorsIsNoNamespaces(err) {
		closeAll(lns) // CMD listens on the workstation's ports itself
		return runProxyFallback(ctx, netw, env, r, err)
	}
	if err != nil {
		return 0, fmt.Errorf("run %q with the cluster's network: %w", r.Command[0], err)
	}
	defer ns.Close()
	for _, n := range ns.Notes {
		fmt.Fprintln(r.Stderr, "note: "+n)
	}
	st, err := netstack.New(netstack.Config{FD: int(ns.TUN.Fd()), Handler: netw, Log: zap.NewNop()})
	if err != nil {
		ns.Kill()
		return 0, err
	}
	defer st.Close()
	for _, ln := range lns {
		go serveExposed(ln, ns)
	}
	if r.Refresh != nil && r.RefreshEvery > 0 {
		go refreshTrees(ctx, ns, r)
	}
	return waitForwardingSignals(ns)
}

// refreshTrees reads the pod's files again every r.RefreshEvery and hands
// them to the namespace, until CMD ends. A failed read keeps the old
// files (and says so once per failure streak) and is tried again after
// refreshRetry, not a whole interval later: the token would expire first.
func refreshTrees(ctx context.Context, ns *nsexec.Namespace, r ClusterRun) {
	t := time.NewTimer(r.RefreshEvery)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ns.Done():
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		trees, err := r.Refresh(rctx)
		cancel()
		if err == nil {
			err = ns.UpdateTrees(trees)
		}
		select {
		case <-ns.Done(): // CMD ended meanwhile: nothing to tell
			return
		default:
		}
		if err != nil && !failing {
			fmt.Fprintf(r.Stderr, "note: refreshing the pod's files (its service-account token) failed; CMD keeps the old ones, detour tries again: %v\n", err)
		}
		failing = err != nil
		t.Reset(nextRefresh(r.RefreshEvery, failing))
	}
}

// nextRefresh is the wait before the next refresh: the interval, or after
// a failure refreshRetry (at most the interval).
func nextRefresh(every time.Duration, failed bool) time.Duration {
	if failed {
		return min(refreshRetry, every)
	}
	return every
}

// refreshRetry is how soon a failed refresh of the pod's files is tried
// again.
const refreshRetry = 15 * time.Second

// prepareNetwork asks the agent for the pod's network (and the app's
// environment when r has none) and builds the routing and resolver.
func prepareNetwork(ctx context.Context, link *clusternet.SessionLink, r ClusterRun) (*clusternet.Net, map[string]string, error) {
	pod, err := link.Network(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("ask %s's agent for the pod's network: %w", r.What, err)
	}
	env := r.Env
	if env == nil {
		if env, err = link.Environment(ctx); err != nil {
			return nil, nil, fmt.Errorf("ask %s's agent for the app's environment: %w", r.What, err)
		}
	}
	ws, err := clusternet.WorkstationResolvers(workstationResolvConf())
	if err != nil {
		fmt.Fprintf(r.Stderr, "note: %v; names outside the cluster will not resolve\n", err)
	}
	netw, err := clusternet.New(clusternet.Config{
		Link: link, Pod: pod, AlsoProxy: r.AlsoProxy, Resolver: netip.MustParseAddr(nsexec.ResolverAddr), Workstation: ws,
		Log: zap.NewNop(), Warn: func(s string) { fmt.Fprintln(r.Stderr, s) },
	})
	return netw, env, err
}

// parse checks the flags: --also-proxy CIDRs and --expose ports.
func (f clusterNetFlags) parse() ([]netip.Prefix, []uint16, error) {
	var also []netip.Prefix
	for _, s := range f.alsoProxy {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, nil, fmt.Errorf("--also-proxy %q is not a CIDR (e.g. 10.0.0.0/8): %w", s, err)
		}
		also = append(also, p.Masked())
	}
	var ports []uint16
	for _, p := range f.expose {
		if p == 0 || p > 65535 {
			return nil, nil, fmt.Errorf("--expose %d is not a port (1..65535)", p)
		}
		ports = append(ports, uint16(p))
	}
	return also, ports, nil
}

// agentConnector opens a tunnel session with a ready agent pod of the
// workload (the alphabetically first), through a port-forward.
func (a *app) agentConnector(c clusterNet) func(ctx context.Context) (*client.Session, error) {
	host, _ := os.Hostname()
	id := fmt.Sprintf("%s-%d-net", host, os.Getpid())
	return func(ctx context.Context) (*client.Session, error) {
		ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		pods, _, err := kube.AgentPods(ctx, c.cs, c.workload)
		if err != nil {
			return nil, err
		}
		if len(pods) == 0 {
			return nil, fmt.Errorf("%s has no pod with a ready agent", c.workload.Ref())
		}
		sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
		conn, err := kube.DialPod(ctx, c.rc, c.cs, c.workload.Namespace, pods[0].Name, annotations.TunnelPort)
		if err != nil {
			return nil, err
		}
		return client.Open(ctx, conn, client.Options{ClientID: id, User: client.DefaultUser(), Log: zap.NewNop()})
	}
}

// workstationResolvConf is the resolv.conf whose nameservers answer the
// names the cluster does not own: $DETOUR_WORKSTATION_RESOLV_CONF, else
// /etc/resolv.conf (read, never changed).
func workstationResolvConf() string {
	if p := os.Getenv("DETOUR_WORKSTATION_RESOLV_CONF"); p != "" {
		return p
	}
	return "/etc/resolv.conf"
}

func commandEnv(app map[string]string) []string {
	env := os.Environ()
	for k, v := range app {
		env = append(env, k+"="+v)
	}
	return env
}

// listenExposed listens on the workstation's 127.0.0.1 for each port.
func listenExposed(ports []uint16) ([]net.Listener, error) {
	var lns []net.Listener
	for _, p := range ports {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(p))))
		if err != nil {
			closeAll(lns)
			return nil, fmt.Errorf("port %d: cannot listen on the workstation's 127.0.0.1:%d for CMD (is something else using it?): %w", p, p, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// listenInbound exposes the intercept's local ports that are free on the
// workstation.
func listenInbound(ports []uint16, stderr io.Writer) []net.Listener {
	var lns []net.Listener
	for _, p := range ports {
		ln, err := listenExposed([]uint16{p})
		if err != nil {
			fmt.Fprintf(stderr, "note: 127.0.0.1:%d is already served on this workstation: intercepted connections go there, not into CMD's namespace\n", p)
			continue
		}
		lns = append(lns, ln...)
	}
	return lns
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		_ = ln.Close()
	}
}

// serveExposed relays each connection to the same port inside CMD's
// namespace (CMD listening on 127.0.0.1 or any address there).
func serveExposed(ln net.Listener, ns *nsexec.Namespace) {
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			in, err := ns.DialLoopback(ctx, port)
			cancel()
			if err != nil {
				return // nothing listens yet: the caller sees the connection close
			}
			tunnel.Join(c, in)
		}()
	}
}

// waitForwardingSignals waits for CMD, passing on the signals detour gets
// (in a terminal, Ctrl-C goes to CMD's process group directly, not here).
//
// The command's context is not watched here: main cancels it on SIGINT and
// SIGTERM, which must reach CMD as signals (for a graceful exit), not kill it.
func waitForwardingSignals(ns *nsexec.Namespace) (int, error) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	for {
		select {
		case s := <-sigs:
			_ = ns.Signal(s.(syscall.Signal))
		case <-ns.Done():
			return ns.Wait()
		}
	}
}

// errorsIsNoNamespaces reports a machine that cannot make the namespaces.
func errorsIsNoNamespaces(err error) bool {
	return errors.Is(err, nsexec.ErrNoUserNamespaces) || errors.Is(err, nsexec.ErrNoTUN) || errors.Is(err, nsexec.ErrUnsupported)
}

// NamespaceChild reports whether this process was started as the first
// process of a command's namespace (detour run, intercept -- CMD); main
// then exits with NamespaceChildMain's status before doing anything else.
func NamespaceChild() bool { return nsexec.IsChild() }

// NamespaceChildMain sets the namespace up and runs the command in it.
func NamespaceChildMain() int { return nsexec.ChildMain() }
