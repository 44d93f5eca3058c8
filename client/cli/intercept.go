package cli

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/client/internal/daemon"
	"github.com/detour-dev/detour/client/internal/kube"
	"github.com/detour-dev/detour/client/internal/nsexec"
	"github.com/detour-dev/detour/client/internal/podfiles"
	"github.com/detour-dev/detour/client/internal/poll"
	"github.com/detour-dev/detour/client/internal/resolve"
	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/tunnel"
)

type interceptFlags struct {
	port       string
	workload   string
	service    string
	container  string
	mechanism  string
	envFile    string
	envJSON    string
	envSyntax  string
	output     string
	toPod      []uint
	agentImage string
	// mechanismFlags reports the extension flags (--MECH-NAME) that were set.
	mechanismFlags func() map[string]map[string][]string
	preview        previewFlags
	net            clusterNetFlags
	changed        func(flag string) bool
}

func (a *app) interceptCommand() *cobra.Command {
	var f interceptFlags
	cmd := &cobra.Command{
		Use:   "intercept NAME --port LOCAL[:SVCPORT] [flags] [-- CMD ARGS...]",
		Short: "Send a workload's traffic to a port on your workstation",
		Long: `Intercept the traffic of a Deployment, ReplicaSet, StatefulSet or Argo
Rollout (argoproj.io Rollout, where the cluster serves it).

NAME is the workload. With -n NS (and no --workload) the intercept is named
NAME-NS; with --workload W, NAME is the intercept's name and W the workload.
The Service is the one whose selector matches the workload's pods (--service
picks one when several do); --port LOCAL:SVCPORT picks the Service port by
name or number (LOCAL alone when the Service has one port).

If the workload does not run the detour agent yet, detour adds the
detour.dev/inject annotation to its pod template and waits for the rollout.
The intercept then holds on every pod of the workload, follows new pods, and
lasts until 'detour leave NAME' (or, with -- CMD, until CMD exits).

With -- CMD, CMD also gets the pod's view of the cluster (see 'detour run
--help'): the cluster's names and Services, reached from the pod, and the
app's environment and files, read with your permissions — rootless, in
its own namespaces. The intercepted traffic reaches CMD on 127.0.0.1:LOCAL
inside them. --cluster-network=false runs CMD on your workstation's
network instead.

Mechanisms: tcp (the default) takes every connection to the port: one
person at a time. http takes only the requests that carry your header, so
several developers share a workload and everyone else keeps reaching the
app: --http-match auto (the default for http) makes a unique header and
prints it; --http-match NAME=VALUE (repeatable) picks your own, and
--http-match baggage:KEY=VALUE one member of the W3C baggage header, which
traced apps pass on from service to service (--http-auto-header baggage
makes auto use one). --http-path-prefix, --http-path-equal,
--http-path-regex (RE2, the whole path) and --http-method narrow it
further: a request must match every rule. Any --http-* flag implies
--mechanism http. With --preview-url you also get a
link that routes a plain browser to you: open it once and that browser's
requests come to you (a cookie); anyone else's keep reaching the app.
The link's address is asked for in a terminal (Enter accepts what detour
found in the cluster); --ingress-host and --ingress-port give it instead,
and any --ingress-* flag implies --preview-url.

--env-file FILE writes the app's environment for your IDE, docker or a
shell; --env-syntax picks the format (docker, compose, sh, csh, cmd, ps,
json), each quoted so that its reader gets every value back unchanged.

Exit status: 1 when the cluster or the daemon refuses, 2 for a wrong
command line (checked before anything in the cluster changes), with
-- CMD the status of CMD.`,
		Example: `  detour intercept hello --port 8080
  detour intercept hello -n shop --port 8080:http        # intercept named hello-shop
  detour intercept mine --workload hello --port 3000:80 --service hello-stable
  detour intercept hello --port 8080 --env-file hello.env --to-pod 5432
  detour intercept hello --port 8080 --env-file hello.sh --env-syntax sh   # then: . ./hello.sh
  detour intercept hello --port 8080 -- ./run-tests.sh   # exits with the tests' status
  detour intercept hello --port 8080 --http-match auto    # only requests with the printed header
  detour intercept hello --port 8080 --http-path-prefix /api/ --http-method POST   # and only POSTs under /api/
  detour intercept hello --port 8080 --http-match x-dev=alice --preview-url \
      --ingress-host shop.example.com --ingress-port 443 --ingress-tls`,
		Args: func(cmd *cobra.Command, args []string) error {
			n := len(args)
			if d := cmd.ArgsLenAtDash(); d >= 0 {
				n = d
			}
			if n != 1 {
				return fmt.Errorf("detour intercept needs exactly one NAME before any -- CMD, got %d (see --help)", n)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var command []string
			if d := cmd.ArgsLenAtDash(); d >= 0 {
				command = args[d:]
			}
			return a.intercept(cmd.Context(), args[0], f, command)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.port, "port", "p", "", "LOCAL[:SVCPORT]: the local port to send traffic to, and the Service port (name or number) to take it from (required)")
	fl.StringVar(&f.workload, "workload", "", "the workload to intercept, when NAME is only the intercept's name (kind/name picks a kind)")
	fl.StringVar(&f.service, "service", "", "the Service to intercept when several select the workload")
	fl.StringVar(&f.container, "container", "", "the app container whose port to intercept (default: the one that declares the Service port's targetPort); in a pod of several containers the agent serves that one: its pods roll once when it served another")
	fl.StringVar(&f.mechanism, "mechanism", "", "tcp: every connection to the port; http: only requests whose headers match (default from config, else tcp); extensions add others")
	fl.StringVar(&f.envFile, "env-file", "", "write the app container's environment here, in --env-syntax (default docker: literal KEY=value lines, as docker --env-file and IDE run configs read them)")
	fl.StringVar(&f.envJSON, "env-json", "", "write the app container's environment here as a JSON object")
	addEnvSyntaxFlag(cmd, &f.envSyntax)
	fl.StringVarP(&f.output, "output", "o", "", "print what was created as json or yaml (the schema of status -o json's intercepts[]: header, preview URL, pods) instead of the summary")
	fl.UintSliceVar(&f.toPod, "to-pod", nil, "forward localhost:PORT here to localhost:PORT in the pod (repeatable), e.g. for sidecars")
	fl.StringVar(&f.agentImage, "agent-image", "", "agent image to inject (default from config images.agentImage, else the webhook's)")
	addPreviewFlags(fl, &f.preview)
	addClusterNetFlags(fl, &f.net, true)
	_ = cmd.MarkFlagRequired("port")
	var clash error
	global := pflag.NewFlagSet("global", pflag.ContinueOnError)
	if a.kube != nil {
		a.kube.AddFlags(global) // kubectl's flags, inherited from the root
	}
	f.mechanismFlags, clash = mechanismFlags(fl, a.exts, global)
	if clash != nil && a.extsErr == nil {
		a.extsErr = clash
	}
	f.changed = func(name string) bool { return fl.Changed(name) }
	return cmd
}

func (a *app) intercept(ctx context.Context, name string, f interceptFlags, command []string) error {
	cfg, err := a.config()
	if err != nil {
		return err
	}
	if a.extsErr != nil {
		return a.extsErr
	}
	mechFlags := f.mechanismFlags()
	mechanism, extImage, err := chooseMechanism(f.mechanism, cfg.Intercept.DefaultMechanism, mechFlags, a.exts)
	if err != nil {
		return usage(err)
	}
	spec, err := resolve.ParsePort(f.port)
	if err != nil {
		return usage(err)
	}
	if err := checkEnvSyntax(f.envSyntax, f.envFile, f.changed); err != nil {
		return err
	}
	if f.output != "" && f.output != "json" && f.output != "yaml" {
		return usagef("-o %q: use json or yaml", f.output)
	}
	var toPod []uint16
	for _, p := range f.toPod {
		if p == 0 || p > 65535 {
			return usagef("--to-pod %d is not a port (1..65535)", p)
		}
		toPod = append(toPod, uint16(p))
	}
	ns, nsGiven, err := a.namespace()
	if err != nil {
		return err
	}
	interceptName, workloadName := resolve.Names(name, f.workload, ns, nsGiven)
	if err := tunnel.ValidateName(interceptName); err != nil {
		return usage(err)
	}
	// Settings are checked before the cluster is asked anything.
	mechArgs := mechFlags[mechanism]
	var httpMatch []string
	var hs *tunnel.HTTPSettings
	wantPreview, err := decidePreview(cfg.Intercept.PreviewURL, f.preview, f.changed)
	if err != nil {
		return err
	}
	if mechanism == tunnel.MechanismHTTP {
		s, err := httpSettings(mechArgs, interceptName, corev1.ServicePort{}, cfg.Agent.AppProtocolStrategy, wantPreview, rand.Reader)
		if err != nil {
			return usage(err) // crypto/rand does not fail: the rest is the flags
		}
		hs = &s
	}
	var ing *ingress
	if hs != nil && hs.PreviewToken != "" && (anyChanged(f.changed, ingressFlags...) || !a.interactive()) {
		// No dialogue: the flags (or their absence) settle it now.
		i, err := resolveIngress(f.preview, f.changed, ingress{}, false, nil, nil)
		if err != nil {
			return usage(err)
		}
		ing = &i
	}
	if hs == nil && (f.changed("preview-url") && f.preview.enabled || anyChanged(f.changed, ingressFlags...)) {
		return usagef("preview URLs route single requests: they need --mechanism http (this intercept would use %s)", mechanism)
	}

	rc, cs, err := a.clients(ctx)
	if err != nil {
		return err
	}
	cands, err := kube.Candidates(ctx, cs, ns)
	if err != nil {
		return err
	}
	w, err := resolve.FindWorkload(workloadName, ns, cands)
	if err != nil {
		return err
	}
	svcs, err := kube.Services(ctx, cs, ns)
	if err != nil {
		return err
	}
	svc, err := resolve.FindService(w, svcs, f.service)
	if err != nil {
		return err
	}
	sp, err := resolve.FindServicePort(svc, spec.Service)
	if err != nil {
		return err
	}
	appPort, container, err := resolve.ContainerPort(w, sp, f.container)
	if err != nil {
		return err
	}
	if err := checkTLSSecrets(ctx, cs, w); err != nil {
		return err
	}
	var preview string
	if hs != nil {
		if sp.AppProtocol != nil {
			hs.AppProtocol = *sp.AppProtocol
		}
		if hs.PreviewToken != "" && ing == nil {
			i, err := resolveIngress(f.preview, f.changed, detectIngress(ctx, cs, ns, &svc, sp), true, a.in, a.errOut)
			if err != nil {
				return err
			}
			ing = &i
		}
		if ing != nil {
			preview = previewURL(*ing, hs.PreviewToken)
		}
		mechArgs = hs.Args()
		httpMatch = mechArgs[tunnel.ArgMatch]
	}
	image := f.agentImage
	if image == "" {
		image = extImage
	}
	if image == "" {
		image = cfg.Images.AgentImage
	}
	pods, err := a.injectAndWait(ctx, cs, w, image, servedContainer(w, container), cfg.Timeouts.Rollout)
	if err != nil {
		return err
	}
	if err := kube.WaitForEndpoints(ctx, cs, ns, svc.Name, pods, cfg.Timeouts.AgentArrival, a.errOut); err != nil {
		return err
	}
	sel, err := w.PodSelector()
	if err != nil {
		return err
	}
	kubeconfig, kubeContext, err := a.kubeTarget()
	if err != nil {
		return err
	}
	dc, err := a.ensureDaemon(ctx)
	if err != nil {
		return err
	}
	req := daemon.InterceptRequest{
		Name: interceptName, Kubeconfig: kubeconfig, Context: kubeContext, Namespace: ns,
		Workload: w.Ref(), Selector: sel.String(), Service: svc.Name, PortName: sp.Name, Port: sp.Port,
		AppPort: appPort, Mechanism: mechanism, MechanismArgs: mechArgs, HTTPMatch: httpMatch, PreviewURL: preview, LocalAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(int(spec.Local))),
		ToPod: toPod, User: client.DefaultUser(), WantEnv: f.envFile != "" || f.envJSON != "" || len(command) > 0,
		TimeoutSec: int(math.Ceil(cfg.Timeouts.AgentArrival.Seconds())), // 500ms is 1 s, not 0 (the daemon's default)
	}
	st, err := dc.Create(ctx, req)
	if err != nil {
		return fmt.Errorf("intercept %q: %w", interceptName, err)
	}
	leave := func() {
		if err := dc.Leave(context.WithoutCancel(ctx), interceptName); err != nil {
			fmt.Fprintf(a.errOut, "warning: leave %q: %v\n", interceptName, err)
		} else {
			fmt.Fprintf(a.errOut, "Left %q.\n", interceptName)
		}
	}
	if len(command) > 0 {
		// The intercept lives as long as CMD: whatever happens from here on.
		defer leave()
	}
	if f.envFile != "" || f.envJSON != "" || (len(command) > 0 && !f.net.enabled) {
		// Secret-backed values come from the API with the user's own
		// permissions, never from the agent (the cluster-network path
		// reads them itself, with the files).
		view, err := readPodView(ctx, cs, w, false)
		if err != nil {
			return err
		}
		printNotes(a.errOut, view.notes)
		st.Env = mergeEnv(st.Env, view.env)
	}
	var written []string
	if f.envFile != "" {
		if err := writeEnvFile(f.envFile, f.envSyntax, st.Env, a.errOut); err != nil {
			return err
		}
		written = append(written, f.envFile)
	}
	if f.envJSON != "" {
		b, _ := json.MarshalIndent(st.Env, "", "  ")
		if err := os.WriteFile(f.envJSON, append(b, '\n'), 0o600); err != nil {
			return fmt.Errorf("--env-json: %w", err)
		}
		written = append(written, f.envJSON)
	}
	if f.output != "" {
		// The environment goes to the files asked for, never to stdout
		// (it may hold Secret values).
		created := st
		created.Env = nil
		if err := printStructured(a.out, f.output, created); err != nil {
			return err
		}
	} else {
		a.printSummary(st, len(pods), written)
	}
	if len(command) == 0 {
		return nil
	}
	if f.net.enabled {
		c := clusterNet{rc: rc, cs: cs, workload: w, command: command, env: st.Env, inbound: []uint16{spec.Local}, flags: f.net}
		code, err := a.runInClusterNetwork(ctx, c)
		if err != nil {
			return err
		}
		if code != 0 {
			return ExitCode(code)
		}
		return nil
	}
	code, runErr := runCommand(ctx, command, st.Env)
	if runErr != nil {
		return runErr
	}
	if code != 0 {
		return ExitCode(code)
	}
	return nil
}

// servedContainer is the container the agent must serve for the port of
// container: that one when the pod has several (the webhook would
// otherwise serve the first one a Service targets), "" when it has one.
func servedContainer(w resolve.Workload, container string) string {
	if len(w.Template.Spec.Containers) < 2 {
		return ""
	}
	return container
}

// injectAndWait adds the agent to the workload when it has none, makes it
// serve container (when not empty and its agents serve another), and
// waits until its pods run it.
func (a *app) injectAndWait(ctx context.Context, cs kubernetes.Interface, w resolve.Workload, image, container string, timeout time.Duration) ([]corev1.Pod, error) {
	if container != "" && w.Template.Annotations[annotations.Container] != container && !agentsServe(ctx, cs, w, container) {
		fmt.Fprintf(a.errOut, "Making the detour agent of %s serve container %q (annotation %s); its pods roll…\n", w.Ref(), container, annotations.Container)
		if err := kube.SetAppContainer(ctx, cs, w, container); err != nil {
			return nil, err
		}
		if kube.Injected(w) {
			// The old pods' agents are ready too, for the other container:
			// wait until every ready agent serves this one.
			_, _, err := poll.Until(ctx, 500*time.Millisecond, timeout, nil, func(ctx context.Context) (bool, string, error) {
				return agentsServe(ctx, cs, w, container), "", nil
			})
			if err != nil {
				return nil, fmt.Errorf("%s: its pods did not roll to agents serving container %q within %s: %w", w.Ref(), container, timeout, err)
			}
		}
	}
	if !kube.Injected(w) {
		fmt.Fprintf(a.errOut, "Adding the detour agent to %s (annotation detour.dev/inject=enabled); waiting for its pods to roll…\n", w.Ref())
		if err := kube.SetInjection(ctx, cs, w, true, image); err != nil {
			return nil, err
		}
	}
	return kube.WaitForAgents(ctx, cs, w, timeout, a.errOut)
}

// agentsServe says whether the workload's agents all serve container
// already (no roll needed); false when it has none.
func agentsServe(ctx context.Context, cs kubernetes.Interface, w resolve.Workload, container string) bool {
	pods, _, err := kube.AgentPods(ctx, cs, w)
	if err != nil || len(pods) == 0 {
		return false
	}
	for i := range pods {
		if c, err := podfiles.AppContainer(&pods[i]); err != nil || c != container {
			return false
		}
	}
	return true
}

func (a *app) printSummary(st daemon.InterceptStatus, pods int, envFiles []string) {
	port := fmt.Sprint(st.Port)
	if st.PortName != "" {
		port = fmt.Sprintf("%s (%d)", st.PortName, st.Port)
	}
	fmt.Fprintf(a.out, "Intercept %q is active.\n", st.Name)
	fmt.Fprintf(a.out, "  workload:   %s in namespace %s (%d pods)\n", st.Workload, st.Namespace, pods)
	fmt.Fprintf(a.out, "  service:    %s, port %s → container port %d\n", st.Service, port, st.AppPort)
	if len(st.HTTPMatch) > 0 {
		fmt.Fprintf(a.out, "  mechanism:  %s (only requests with the header; everyone else's reach the app)\n", st.Mechanism)
		fmt.Fprintf(a.out, "  header:     %s\n", headerLine(st.HTTPMatch))
		if r := requestLineRules(st.MechanismArgs); r != "" {
			fmt.Fprintf(a.out, "  requests:   %s\n", r)
		}
		fmt.Fprintf(a.out, "  try:        %s\n", tryHint(st))
	} else {
		fmt.Fprintf(a.out, "  mechanism:  %s (every connection)\n", st.Mechanism)
	}
	if st.PreviewURL != "" {
		fmt.Fprintf(a.out, "  preview:    %s\n", st.PreviewURL)
	}
	fmt.Fprintf(a.out, "  local:      %s\n", st.LocalAddr)
	for _, p := range st.ToPod {
		fmt.Fprintf(a.out, "  to pod:     127.0.0.1:%d → pod's 127.0.0.1:%d\n", p, p)
	}
	if len(envFiles) > 0 {
		fmt.Fprintf(a.out, "  env files:  %s\n", strings.Join(envFiles, ", "))
	}
	fmt.Fprintf(a.out, "Leave with: detour leave %s\n", st.Name)
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_@%+=:,./-]*$`)

// runCommand runs CMD with the app's environment over ours, forwarding
// interrupts, and returns its exit code.
func runCommand(ctx context.Context, command []string, env map[string]string) (int, error) {
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	if nsexec.ForegroundInTerminal(cmd.SysProcAttr) {
		// The terminal's signals now reach CMD alone; those forwarded
		// below are the ones sent to detour itself.
		defer nsexec.ReclaimTerminal()
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("run %q: %w", command[0], err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case s := <-sigs:
			_ = cmd.Process.Signal(s)
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					return 128 + int(ws.Signal()), nil // as a shell reports it
				}
				return ee.ExitCode(), nil
			}
			if err != nil {
				return 0, err
			}
			return 0, nil
		}
	}
}
