package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/detour-dev/detour/client/internal/daemon"
	"github.com/detour-dev/detour/client/internal/kube"
	"github.com/detour-dev/detour/client/internal/poll"
	"github.com/detour-dev/detour/client/internal/resolve"
	"github.com/detour-dev/detour/client/internal/workload"
	"github.com/detour-dev/detour/internal/version"
)

// app carries what every command needs; nothing here is global.
type app struct {
	kube    *genericclioptions.ConfigFlags
	out     io.Writer
	errOut  io.Writer
	in      io.Reader
	cfg     Config
	cfgErr  error
	exts    []Extension
	extsErr error
}

// NewRootCommand builds the `detour` command tree.
func NewRootCommand(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	a := &app{kube: genericclioptions.NewConfigFlags(true), out: stdout, errOut: stderr, in: stdin}
	// Extensions add flags, so they are read before the command line is parsed.
	if dir, err := os.UserConfigDir(); err == nil {
		a.exts, a.extsErr = loadExtensions(filepath.Join(dir, "detour", "extensions"))
	}
	root := &cobra.Command{
		Use:   "detour",
		Short: "Send a Kubernetes workload's traffic to your workstation, and give it back",
		Long: `detour intercepts the traffic of a Kubernetes workload and sends it to a
process on your workstation, so you can run the service locally under a
debugger against the real cluster. Leave, and the app gets its traffic back.

  detour intercept hello --port 8080            # hello's traffic → localhost:8080
  detour intercept hello -n shop --port 8080:http -- go run ./cmd/hello
  detour status                                 # what you hold
  detour leave hello

A background daemon (started on demand) holds the port-forwards; it works as
a kubectl plugin too: kubectl detour ...

` + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, args []string) {
			path, err := configPath()
			if err != nil {
				a.cfg, a.cfgErr = defaultConfig(), err
				return
			}
			a.cfg, a.cfgErr = loadConfig(path)
		},
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	a.kube.AddFlags(root.PersistentFlags())
	root.AddCommand(
		a.interceptCommand(),
		a.runCommand(),
		a.shellCommand(),
		a.leaveCommand(),
		a.resumeCommand(),
		a.statusCommand(),
		a.listCommand(),
		a.quitCommand(),
		a.versionCommand(),
		a.installCommand(),
		a.uninstallCommand(),
		a.daemonCommand(),
	)
	a.addClusterCompletions(root)
	return root
}

func (a *app) config() (Config, error) { return a.cfg, a.cfgErr }

// clients builds the Kubernetes clients and checks that the cluster answers.
func (a *app) clients(ctx context.Context) (*rest.Config, kubernetes.Interface, error) {
	rc, err := a.kube.ToRESTConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("no usable kubeconfig (set --kubeconfig, $KUBECONFIG or ~/.kube/config): %w", err)
	}
	rc.Timeout = 0
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, err
	}
	probe := *rc
	probe.Timeout = 5 * time.Second
	pcs, err := kubernetes.NewForConfig(&probe)
	if err != nil {
		return nil, nil, err
	}
	if _, err := pcs.Discovery().ServerVersion(); err != nil {
		return nil, nil, fmt.Errorf("cannot reach the cluster at %s (check --kubeconfig and --context): %w", rc.Host, err)
	}
	// The dynamic client reaches the workload kinds served by custom
	// resources (Argo Rollouts).
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, nil, err
	}
	return rc, workload.WithDynamic(cs, dyn), nil
}

// namespaceWorkloads reads the namespace's workloads, for commands that take
// a workload name.
func (a *app) namespaceWorkloads(ctx context.Context) (string, kubernetes.Interface, resolve.Candidates, error) {
	ns, _, err := a.namespace()
	if err != nil {
		return "", nil, resolve.Candidates{}, err
	}
	_, cs, err := a.clients(ctx)
	if err != nil {
		return "", nil, resolve.Candidates{}, err
	}
	cands, err := kube.Candidates(ctx, cs, ns)
	return ns, cs, cands, err
}

// namespace is -n, else the kubeconfig's namespace; given says whether -n was used.
func (a *app) namespace() (ns string, given bool, err error) {
	ns, given, err = a.kube.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return "", false, fmt.Errorf("namespace from kubeconfig: %w", err)
	}
	return ns, given, nil
}

// kubeTarget is what the daemon needs to reach the same cluster as this
// command: an explicit kubeconfig path and context, not this shell's env.
func (a *app) kubeTarget() (kubeconfig, kubeContext string, err error) {
	if a.kube.KubeConfig != nil && *a.kube.KubeConfig != "" {
		kubeconfig = *a.kube.KubeConfig
	} else if env := os.Getenv("KUBECONFIG"); env != "" {
		kubeconfig = filepath.SplitList(env)[0]
	}
	if kubeconfig != "" {
		if kubeconfig, err = filepath.Abs(kubeconfig); err != nil {
			return "", "", err
		}
	}
	if a.kube.Context != nil && *a.kube.Context != "" {
		return kubeconfig, *a.kube.Context, nil
	}
	raw, err := a.kube.ToRawKubeConfigLoader().RawConfig()
	if err != nil {
		return "", "", fmt.Errorf("read kubeconfig: %w", err)
	}
	return kubeconfig, raw.CurrentContext, nil
}

func (a *app) daemonClient() (*daemon.APIClient, error) {
	sock, err := daemon.SocketPath()
	if err != nil {
		return nil, err
	}
	return daemon.NewAPIClient(sock), nil
}

func (a *app) ensureDaemon(ctx context.Context) (*daemon.APIClient, error) {
	c, err := a.daemonClient()
	if err != nil {
		return nil, err
	}
	dir, err := daemon.Dir()
	if err != nil {
		return nil, err
	}
	if c.Running(ctx) {
		return c, nil
	}
	warnDaemonEnv(a.errOut) // the daemon about to start reads it
	return c, c.EnsureRunning(ctx, []string{"daemon"}, filepath.Join(dir, "daemon.log"))
}

// warnDaemonEnv says on w what in the environment the daemon will not
// take (it would say so only in its log).
func warnDaemonEnv(w io.Writer) {
	if linger, err := daemon.SessionLinger(); err != nil {
		fmt.Fprintf(w, "detour: warning: %v; the daemon keeps spare sessions for the default %s\n", err, linger)
	}
}

func addOutputFlag(cmd *cobra.Command, out *string) {
	cmd.Flags().StringVarP(out, "output", "o", "", "output format: json or yaml (default: a table)")
}

func (a *app) leaveCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "leave NAME",
		Short: "Give an intercepted workload's traffic back to the app",
		Long: "Removes the intercept NAME from every pod of its workload; new connections reach the app again at once.\n\n" +
			fmt.Sprintf("The daemon keeps each pod's connection for %d minutes (%s, e.g. 30s, or 0 for none, in the environment of the command that starts the daemon), ",
				int(daemon.DefaultSessionLinger.Minutes()), daemon.SessionLingerEnv) +
			"so that intercepting the same pods again meanwhile starts faster; detour quit closes them.",
		Args: exactArgs(1, "the intercept's name (see detour status)"),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			return a.interceptNames(cmd.Context()), cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.daemonClient()
			if err != nil {
				return err
			}
			if !c.Running(cmd.Context()) {
				return fmt.Errorf("cannot leave %q: %w, so no intercept is active (start one with detour intercept)", args[0], daemon.ErrNotRunning)
			}
			if err := c.Leave(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(a.out, "Left %q: its traffic goes to the app again.\n", args[0])
			return nil
		},
	}
}

func (a *app) resumeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "resume NAME",
		Short: "Re-create an intercept that was dropped while this workstation slept",
		Long: `When this workstation is silent for longer than the agents' keep-alive
bound (it slept, or the daemon was stopped), the agents give the traffic
back to the app, and the intercept is not taken back behind your back:
someone else may hold the port by now. 'detour status' shows such an
intercept as dropped; resume re-creates it with the same settings (the same
header and preview URL for http intercepts).`,
		Args: exactArgs(1, "the intercept's name (see detour status)"),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			return a.interceptNames(cmd.Context()), cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.daemonClient()
			if err != nil {
				return err
			}
			if !c.Running(cmd.Context()) {
				return fmt.Errorf("cannot resume %q: %w, so it holds no intercepts (start one with detour intercept)", args[0], daemon.ErrNotRunning)
			}
			st, err := c.Status(cmd.Context())
			if err != nil {
				return err
			}
			for _, ic := range st.Intercepts {
				if ic.Name != args[0] {
					continue
				}
				if ic.State != "dropped" {
					return fmt.Errorf("intercept %q is %s, not dropped: nothing to resume", ic.Name, ic.State)
				}
				got, err := c.Create(cmd.Context(), ic.InterceptRequest)
				if err != nil {
					return fmt.Errorf("resume %q: %w", ic.Name, err)
				}
				a.printSummary(got, len(got.Pods), nil)
				return nil
			}
			return fmt.Errorf("no intercept named %q (see detour status)", args[0])
		},
	}
}

func (a *app) interceptNames(ctx context.Context) []string {
	c, err := a.daemonClient()
	if err != nil {
		return nil
	}
	st, err := c.Status(ctx)
	if err != nil {
		return nil
	}
	var names []string
	for _, ic := range st.Intercepts {
		names = append(names, ic.Name)
	}
	return names
}

func (a *app) statusCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show your active intercepts and the state of each pod's connection",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.daemonClient()
			if err != nil {
				return err
			}
			var answer *daemon.Status
			if st, err := c.Status(cmd.Context()); err == nil {
				answer = &st
			}
			rep := newStatusReport(version.Version, answer)
			if output != "" {
				return printStructured(a.out, output, rep)
			}
			if rep.Daemon == nil {
				fmt.Fprintln(a.out, "The detour daemon is not running: no intercepts.")
				return nil
			}
			if len(rep.Intercepts) == 0 {
				fmt.Fprintln(a.out, "No active intercepts.")
				return nil
			}
			tw := newTable(a.out, "NAME", "NAMESPACE", "WORKLOAD", "SERVICE", "PORT", "TAKES", "LOCAL", "PODS")
			for _, ic := range rep.Intercepts {
				active := 0
				var states []string
				for _, p := range ic.Pods {
					if p.State == "active" {
						active++
					} else {
						s := p.Pod + ": " + p.State
						if p.LastError != "" {
							s += " (" + p.LastError + ")"
						}
						states = append(states, s)
					}
				}
				port := portText(ic.PortName, ic.ServicePort)
				takes := takesOf(ic.Mechanism, ic.HTTPMatch, ic.MechanismArgs)
				pods := fmt.Sprintf("%d/%d active", active, len(ic.Pods))
				if ic.State != "" && ic.State != "active" {
					pods += " (" + ic.State + ")"
				}
				tw.row(ic.Name, ic.Namespace, ic.Workload, ic.Service, port, takes, ic.LocalAddr, pods)
				for _, p := range ic.Ports[min(1, len(ic.Ports)):] {
					tw.row("", "", "", "", portText(p.PortName, p.ServicePort), "", p.LocalAddr, "")
				}
				if ic.PreviewURL != "" {
					tw.row("", "", "", "", "", "preview: "+ic.PreviewURL, "", "")
				}
				if ic.Mirror != nil {
					tw.row("", "", "", "", "", mirrorCounts(ic.Mirror.Copied, ic.Mirror.Dropped), "", "")
				}
				if ic.State == "dropped" {
					tw.row("", "", "", "", "", "", "", "  DROPPED: "+ic.Dropped)
					tw.row("", "", "", "", "", "", "", fmt.Sprintf("  re-create it: detour resume %s (or: detour leave %s)", ic.Name, ic.Name))
					continue
				}
				for _, s := range states {
					tw.row("", "", "", "", "", "", "", "  "+s)
				}
			}
			return tw.flush()
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func (a *app) quitCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "quit",
		Short: "Leave every intercept and stop the background daemon",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.daemonClient()
			if err != nil {
				return err
			}
			if !c.Running(cmd.Context()) {
				fmt.Fprintln(a.out, "The detour daemon is not running.")
				return nil
			}
			if err := c.Quit(cmd.Context()); err != nil {
				return err
			}
			// Wait (10 s at most) for it to be gone.
			_, _, _ = poll.Until(cmd.Context(), 100*time.Millisecond, 10*time.Second, nil, func(ctx context.Context) (bool, string, error) {
				return !c.Running(ctx), "", nil
			})
			fmt.Fprintln(a.out, "Left all intercepts; the daemon has stopped.")
			return nil
		},
	}
}

func (a *app) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the client's, the daemon's and the agents' versions",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintf(a.out, "client: %s\n", version.Version)
			c, err := a.daemonClient()
			if err != nil {
				return err
			}
			st, err := c.Status(cmd.Context())
			if err != nil {
				fmt.Fprintln(a.out, "daemon: not running")
				return nil
			}
			fmt.Fprintf(a.out, "daemon: %s (pid %d)\n", st.Version, st.PID)
			if st.Version != version.Version {
				fmt.Fprintf(a.errOut, "warning: the daemon (%s) is not this client's version (%s): run detour quit, then retry\n", st.Version, version.Version)
			}
			agents := map[string][]string{}
			for _, ic := range st.Intercepts {
				for _, p := range ic.Pods {
					if p.AgentVersion != "" {
						agents[p.AgentVersion] = append(agents[p.AgentVersion], ic.Namespace+"/"+p.Pod)
					}
				}
			}
			vs := make([]string, 0, len(agents))
			for v := range agents {
				vs = append(vs, v)
			}
			sort.Strings(vs)
			for _, v := range vs {
				fmt.Fprintf(a.out, "agent: %s (%s)\n", v, strings.Join(agents[v], ", "))
				if v != version.Version {
					fmt.Fprintf(a.errOut, "warning: agents at %s differ from this client (%s)\n", v, version.Version)
				}
			}
			return nil
		},
	}
}

func (a *app) daemonCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "daemon",
		Short:  "Run the background daemon in the foreground (started on demand by other commands)",
		Hidden: true,
		Args:   exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			sock, err := daemon.SocketPath()
			if err != nil {
				return err
			}
			ln, err := daemon.Listen(sock)
			if err != nil {
				return err
			}
			log, err := newDaemonLogger(a.errOut)
			if err != nil {
				return err
			}
			defer log.Sync()
			linger, err := daemon.SessionLinger()
			if err != nil {
				log.Warn("ignored; spare sessions kept for the default time", zap.Error(err), zap.Duration("linger", linger))
			}
			return daemon.New(log, linger).Run(cmd.Context(), ln)
		},
	}
}

func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == n {
			return nil
		}
		if n == 0 {
			return fmt.Errorf("%s takes no arguments, got %q (see --help)", cmd.CommandPath(), args)
		}
		if len(args) < n {
			return fmt.Errorf("%s needs %s (see --help)", cmd.CommandPath(), what)
		}
		return fmt.Errorf("%s takes %d argument(s), got %d: %q (see --help)", cmd.CommandPath(), n, len(args), args)
	}
}
