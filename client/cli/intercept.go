package cli

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	"k8s.io/client-go/rest"

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
	ports      []string
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
	mirror     bool
	replace    replaceFlags
	// mechanismFlags reports the extension flags (--MECH-NAME) that were set.
	mechanismFlags func() map[string]map[string][]string
	preview        previewFlags
	net            clusterNetFlags
	changed        func(flag string) bool
}

func (a *app) interceptCommand() *cobra.Command {
	var f interceptFlags
	cmd := &cobra.Command{
		Use:     "intercept NAME --port LOCAL[:SVCPORT]... [flags] [-- CMD ARGS...]",
		Short:   "Send a workload's traffic to a port on your workstation",
		Long:    interceptLong,
		Example: interceptExamples,
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
	a.addInterceptFlags(cmd, &f)
	return cmd
}

// addInterceptFlags declares intercept's flags into f.
func (a *app) addInterceptFlags(cmd *cobra.Command, f *interceptFlags) {
	fl := cmd.Flags()
	fl.StringArrayVarP(&f.ports, "port", "p", nil, "LOCAL[:SVCPORT]: the local port to send traffic to, and the Service port (name or number) to take it from (required; repeatable: --port 8080:http --port 9090:grpc takes both in one intercept)")
	fl.StringVar(&f.workload, "workload", "", "the workload to intercept, when NAME is only the intercept's name (kind/name picks a kind)")
	fl.StringVar(&f.service, "service", "", "the Service to intercept when several select the workload")
	fl.StringVar(&f.container, "container", "", "the app container whose port to intercept (default: the one that declares the Service port's targetPort); in a pod of several containers the agent serves that one: its pods roll once when it served another")
	fl.StringVar(&f.mechanism, "mechanism", "", "tcp: every connection to the port; http: only requests whose headers match (default from config, else tcp); extensions add others")
	fl.BoolVar(&f.mirror, "mirror", false, mirrorUsage)
	fl.BoolVar(&f.replace.enabled, "replace", false, replaceUsage)
	fl.DurationVar(&f.replace.grace, "replace-grace", annotations.DefaultReplaceGrace, "with --replace: how long the pods stay replaced after your workstation went away without a leave (asleep, offline, killed), before they restart with the app")
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
}

// interceptLong is intercept's --help.
const interceptLong = `Intercept the traffic of a Deployment, ReplicaSet, StatefulSet or Argo
Rollout (argoproj.io Rollout, where the cluster serves it).

NAME is the workload. With -n NS (and no --workload) the intercept is named
NAME-NS; with --workload W, NAME is the intercept's name and W the workload.
The Service is the one whose selector matches the workload's pods (--service
picks one when several do); --port LOCAL:SVCPORT picks the Service port by
name or number (LOCAL alone when the Service has one port). Repeat --port
to take several ports of the Service in one intercept (--port 8080:http
--port 9090:grpc): one name, one 'detour leave', each port to its own
local port; each names its Service port, and they must be ports of one
container (the one the agent serves).

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

With --mirror you take nothing: the app (or whoever intercepts the port)
keeps answering, and your local process gets a copy — of every connection
(tcp: the bytes the client sent), or of every request the --http-* rules
match (http; no rule copies every request) — and its answers are thrown
away. Any number of developers mirror a port, beside personal (http)
intercepts, and copies of connections beside a tcp intercept too. Copies
are whole or nothing: when your workstation
falls behind, whole requests are dropped (a connection's copy is cut off
and reset), as are request bodies over 1 MiB, and 'detour status' counts
them.

With --replace the app container stops its own work while you intercept
(queue consumers, cron loops, anything that would compete with your local
process): the workload's pods RESTART with the app's command swapped for a
sleeper and the agent serving its ports, so every connection comes to you
(tcp only). They restart again with the app on 'detour leave', on 'detour
quit', and — if your workstation goes away without a leave — once the
agents have held no intercept for --replace-grace (default 1m). One
developer at a time; Deployments and StatefulSets.

--env-file FILE writes the app's environment for your IDE, docker or a
shell; --env-syntax picks the format (docker, compose, sh, csh, cmd, ps,
json), each quoted so that its reader gets every value back unchanged.

Exit status: 1 when the cluster or the daemon refuses, 2 for a wrong
command line (checked before anything in the cluster changes), with
-- CMD the status of CMD.`

const interceptExamples = `  detour intercept hello --port 8080
  detour intercept hello -n shop --port 8080:http        # intercept named hello-shop
  detour intercept mine --workload hello --port 3000:80 --service hello-stable
  detour intercept hello --port 8080:http --port 9090:grpc   # both ports, one intercept
  detour intercept hello --port 8080 --env-file hello.env --to-pod 5432
  detour intercept hello --port 8080 --env-file hello.sh --env-syntax sh   # then: . ./hello.sh
  detour intercept hello --port 8080 -- ./run-tests.sh   # exits with the tests' status
  detour intercept hello --port 8080 --http-match auto    # only requests with the printed header
  detour intercept hello --port 8080 --http-path-prefix /api/ --http-method POST   # and only POSTs under /api/
  detour intercept worker --port 8080 --replace   # the app stops; its pods restart, and again on leave
  detour intercept tap --workload hello --port 8080 --mirror   # a copy of every connection
  detour intercept tap --workload hello --port 8080 --mirror --http-method POST   # a copy of every POST
  detour intercept hello --port 8080 --http-match x-dev=alice --preview-url \
      --ingress-host shop.example.com --ingress-port 443 --ingress-tls`

// intercept resolves what the user typed, opts the workload in to the
// agent, hands the intercept to the daemon, and then does what the flags
// ask for after it: the environment's files, the summary, -- CMD.
func (a *app) intercept(ctx context.Context, name string, f interceptFlags, command []string) error {
	s, err := a.interceptSettings(name, f)
	if err != nil {
		return err
	}
	rc, cs, err := a.clients(ctx)
	if err != nil {
		return err
	}
	t, err := findTarget(ctx, cs, s, f.service, f.container)
	if err != nil {
		return err
	}
	if err := a.settleHTTP(ctx, cs, &s, &t, f.preview, f.changed); err != nil {
		return err
	}
	pods, err := a.optIn(ctx, cs, &s, t, f.agentImage)
	if err != nil {
		return err
	}
	wantEnv := f.envFile != "" || f.envJSON != "" || len(command) > 0
	dc, st, err := a.handToDaemon(ctx, s, t, wantEnv)
	if err != nil {
		if s.replaceValue != "" {
			a.giveBack(cs, s.ns, t.w.Ref(), s.replaceValue)
		}
		return err
	}
	if len(command) > 0 {
		// The intercept lives as long as CMD: whatever happens from here on.
		defer a.leaveOnExit(ctx, dc, s.name)
	}
	if f.envFile != "" || f.envJSON != "" || (len(command) > 0 && !f.net.enabled) {
		// Secret-backed values come from the API with the user's own
		// permissions, never from the agent (the cluster-network path
		// reads them itself, with the files).
		view, err := readPodView(ctx, cs, t.w, false)
		if err != nil {
			return err
		}
		printNotes(a.errOut, view.notes)
		st.Env = mergeEnv(st.Env, view.env)
	}
	written, err := writeEnvFiles(f.envFile, f.envSyntax, f.envJSON, st.Env, a.errOut)
	if err != nil {
		return err
	}
	if f.output != "" {
		// The environment goes to the files asked for, never to stdout
		// (it may hold Secret values): the report has no field for it.
		if err := printStructured(a.out, f.output, newInterceptReport(st)); err != nil {
			return err
		}
	} else {
		a.printSummary(st, len(pods), written)
	}
	if len(command) == 0 {
		return nil
	}
	inbound := make([]uint16, len(s.ports))
	for i, p := range s.ports {
		inbound[i] = p.Local
	}
	return a.runIntercepted(ctx, rc, cs, t.w, command, st.Env, inbound, f.net)
}

// interceptSettings is what the command line alone decides, checked
// before the cluster is asked anything.
type interceptSettings struct {
	cfg       Config
	ns        string
	name      string // the intercept's
	workload  string // as the user named it
	mechanism string
	extImage  string              // the agent image of the mechanism's extension
	mechArgs  map[string][]string // the mechanism's arguments (the http ones are settled per port)
	ports     []resolve.PortSpec
	toPod     []uint16
	http      *tunnel.HTTPSettings // http intercepts only
	ingress   *ingress             // the preview link's address, once known
	httpMatch []string
	preview   string // the preview URL
	replace   replaceFlags
	// replaceValue is the detour.dev/replace value put on the workload,
	// once it is replaced.
	replaceValue string
}

func (a *app) interceptSettings(name string, f interceptFlags) (interceptSettings, error) {
	var s interceptSettings
	cfg, err := a.config()
	if err != nil {
		return s, err
	}
	if a.extsErr != nil {
		return s, a.extsErr
	}
	s.cfg = cfg
	mechFlags := f.mechanismFlags()
	if s.mechanism, s.extImage, err = chooseMechanism(f.mechanism, cfg.Intercept.DefaultMechanism, mechFlags, a.exts); err != nil {
		return s, usage(err)
	}
	if err := checkEnvSyntax(f.envSyntax, f.envFile, f.changed); err != nil {
		return s, err
	}
	if f.output != "" && f.output != "json" && f.output != "yaml" {
		return s, usagef("-o %q: use json or yaml", f.output)
	}
	if s.toPod, err = toPodPorts(f.toPod); err != nil {
		return s, err
	}
	if s.ports, err = parsePorts(f.ports, s.toPod); err != nil {
		return s, err
	}
	ns, nsGiven, err := a.namespace()
	if err != nil {
		return s, err
	}
	s.ns = ns
	s.name, s.workload = resolve.Names(name, f.workload, ns, nsGiven)
	if err := tunnel.ValidateName(s.name); err != nil {
		return s, usage(err)
	}
	if err := checkAgentNames(s.name, s.ports); err != nil {
		return s, err
	}
	s.mechArgs = mechFlags[s.mechanism]
	if f.mirror {
		if s.mechanism, err = mirrorOf(s.mechanism, f.preview, f.changed); err != nil {
			return s, err
		}
	}
	if err := a.httpIntent(&s, f.preview, f.changed); err != nil {
		return s, err
	}
	s.replace = f.replace
	return s, checkReplace(f.replace, s.mechanism, f.changed)
}

func toPodPorts(ports []uint) ([]uint16, error) {
	var toPod []uint16
	for _, p := range ports {
		if p == 0 || p > 65535 {
			return nil, usagef("--to-pod %d is not a port (1..65535)", p)
		}
		toPod = append(toPod, uint16(p))
	}
	return toPod, nil
}

// httpIntent decides from the flags alone whether the intercept routes
// requests (http) and has a preview link, and the link's address when
// the flags settle it without a dialogue.
func (a *app) httpIntent(s *interceptSettings, p previewFlags, changed func(string) bool) error {
	wantPreview, err := decidePreview(s.cfg.Intercept.PreviewURL, p, changed)
	if err != nil {
		return err
	}
	if s.mechanism == tunnel.MechanismHTTP {
		hs, err := httpSettings(s.mechArgs, s.name, corev1.ServicePort{}, s.cfg.Agent.AppProtocolStrategy, wantPreview, rand.Reader)
		if err != nil {
			return usage(err) // crypto/rand does not fail: the rest is the flags
		}
		s.http = &hs
	} else if s.mechanism == tunnel.MechanismHTTPMirror {
		hs, err := mirrorHTTPSettings(s.mechArgs, s.cfg.Agent.AppProtocolStrategy)
		if err != nil {
			return usage(err)
		}
		s.http = &hs
	}
	if s.http != nil && s.http.PreviewToken != "" && (anyChanged(changed, ingressFlags...) || !a.interactive()) {
		// No dialogue: the flags (or their absence) settle it now.
		i, err := resolveIngress(p, changed, ingress{}, false, nil, nil)
		if err != nil {
			return usage(err)
		}
		s.ingress = &i
	}
	if s.http == nil && (changed("preview-url") && p.enabled || anyChanged(changed, ingressFlags...)) {
		return usagef("preview URLs route single requests: they need --mechanism http (this intercept would use %s)", s.mechanism)
	}
	return nil
}

// interceptTarget is what the intercept takes in the cluster.
type interceptTarget struct {
	w         resolve.Workload
	svc       corev1.Service
	ports     []targetPort
	container string // the one that declares the ports
}

// findTarget finds the workload, its Service and the Service port in the
// cluster, and the container port behind it.
func findTarget(ctx context.Context, cs kubernetes.Interface, s interceptSettings, service, container string) (interceptTarget, error) {
	var t interceptTarget
	cands, svcs, err := kube.CandidatesAndServices(ctx, cs, s.ns)
	if err != nil {
		return t, err
	}
	if t.w, err = resolve.FindWorkload(s.workload, s.ns, cands); err != nil {
		return t, err
	}
	if t.svc, err = resolve.FindService(t.w, svcs, service); err != nil {
		return t, err
	}
	if t.ports, t.container, err = planPorts(t.w, t.svc, s.ports, container); err != nil {
		return t, err
	}
	for i := range t.ports {
		t.ports[i].args = s.mechArgs
	}
	return t, checkTLSSecrets(ctx, cs, t.w)
}

// settleHTTP completes an http intercept's settings from what the cluster
// says: each Service port's appProtocol, and the preview link (asking for
// its address in a dialogue when the flags did not give it; the first
// port's Service port is its default).
func (a *app) settleHTTP(ctx context.Context, cs kubernetes.Interface, s *interceptSettings, t *interceptTarget, p previewFlags, changed func(string) bool) error {
	if s.http == nil {
		return nil
	}
	first := t.ports[0].sp
	if s.http.PreviewToken != "" && s.ingress == nil {
		i, err := resolveIngress(p, changed, detectIngress(ctx, cs, s.ns, &t.svc, first), true, a.in, a.errOut)
		if err != nil {
			return err
		}
		s.ingress = &i
	}
	if s.ingress != nil {
		s.preview = previewURL(*s.ingress, s.http.PreviewToken)
	}
	for i := range t.ports {
		hs := *s.http
		if ap := t.ports[i].sp.AppProtocol; ap != nil {
			hs.AppProtocol = *ap
		}
		t.ports[i].args = hs.Args()
	}
	s.httpMatch = t.ports[0].args[tunnel.ArgMatch]
	return nil
}

// optIn makes the workload run the agent (for the container of the
// port) and waits until its pods and the Service's endpoints have it.
func (a *app) optIn(ctx context.Context, cs kubernetes.Interface, s *interceptSettings, t interceptTarget, agentImage string) ([]corev1.Pod, error) {
	image := agentImage
	if image == "" {
		image = s.extImage
	}
	if image == "" {
		image = s.cfg.Images.AgentImage
	}
	if s.replace.enabled {
		value, pods, err := a.replaceAndWait(ctx, cs, *s, t, image)
		s.replaceValue = value
		return pods, err
	}
	pods, err := a.injectAndWait(ctx, cs, t.w, image, servedContainer(t.w, t.container), s.cfg.Timeouts.Rollout)
	if err != nil {
		return nil, err
	}
	if err := kube.WaitForEndpoints(ctx, cs, s.ns, t.svc.Name, pods, s.cfg.Timeouts.AgentArrival, a.errOut); err != nil {
		return nil, err
	}
	return pods, nil
}

// handToDaemon asks the daemon (started when it is not running) to hold
// the intercept, and returns once every pod holds it.
func (a *app) handToDaemon(ctx context.Context, s interceptSettings, t interceptTarget, wantEnv bool) (*daemon.APIClient, daemon.InterceptStatus, error) {
	sel, err := t.w.PodSelector()
	if err != nil {
		return nil, daemon.InterceptStatus{}, err
	}
	kubeconfig, kubeContext, err := a.kubeTarget()
	if err != nil {
		return nil, daemon.InterceptStatus{}, err
	}
	dc, err := a.ensureDaemon(ctx)
	if err != nil {
		return nil, daemon.InterceptStatus{}, err
	}
	ports := make([]daemon.PortRequest, len(t.ports))
	for i, p := range t.ports {
		ports[i] = daemon.PortRequest{PortName: p.sp.Name, Port: p.sp.Port, AppPort: p.appPort, MechanismArgs: p.args,
			LocalAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(int(p.spec.Local)))}
	}
	req := daemon.InterceptRequest{
		Name: s.name, Kubeconfig: kubeconfig, Context: kubeContext, Namespace: s.ns,
		Workload: t.w.Ref(), Selector: sel.String(), Service: t.svc.Name, Ports: ports,
		Mechanism: s.mechanism, HTTPMatch: s.httpMatch, PreviewURL: s.preview,
		ToPod: s.toPod, User: client.DefaultUser(), WantEnv: wantEnv,
		TimeoutSec: int(math.Ceil(s.cfg.Timeouts.AgentArrival.Seconds())), // 500ms is 1 s, not 0 (the daemon's default)
		Replace:    s.replaceValue,
	}
	st, err := dc.Create(ctx, req)
	if err != nil {
		return nil, daemon.InterceptStatus{}, fmt.Errorf("intercept %q: %w", s.name, err)
	}
	if st.ServiceCheck != "" {
		fmt.Fprintf(a.errOut, "warning: %s\n", st.ServiceCheck)
	}
	return dc, st, nil
}

// leaveOnExit leaves the intercept that lived as long as -- CMD.
func (a *app) leaveOnExit(ctx context.Context, dc *daemon.APIClient, name string) {
	if err := dc.Leave(context.WithoutCancel(ctx), name); err != nil {
		fmt.Fprintf(a.errOut, "warning: leave %q: %v\n", name, err)
	} else {
		fmt.Fprintf(a.errOut, "Left %q.\n", name)
	}
}

// writeEnvFiles writes the app's environment to the files asked for, and
// returns their names.
func writeEnvFiles(envFile, syntax, envJSON string, env map[string]string, errOut io.Writer) ([]string, error) {
	var written []string
	if envFile != "" {
		if err := writeEnvFile(envFile, syntax, env, errOut); err != nil {
			return nil, err
		}
		written = append(written, envFile)
	}
	if envJSON != "" {
		b, _ := json.MarshalIndent(env, "", "  ")
		if err := os.WriteFile(envJSON, append(b, '\n'), 0o600); err != nil {
			return nil, fmt.Errorf("--env-json: %w", err)
		}
		written = append(written, envJSON)
	}
	return written, nil
}

// runIntercepted runs -- CMD (in the pod's view of the cluster unless
// --cluster-network=false) and passes its exit status on.
func (a *app) runIntercepted(ctx context.Context, rc *rest.Config, cs kubernetes.Interface, w resolve.Workload, command []string, env map[string]string, inbound []uint16, netFlags clusterNetFlags) error {
	var code int
	var err error
	if netFlags.enabled {
		code, err = a.runInClusterNetwork(ctx, clusterNet{rc: rc, cs: cs, workload: w, command: command, env: env, inbound: inbound, flags: netFlags})
	} else {
		code, err = runCommand(ctx, command, env)
	}
	if err != nil {
		return err
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
	fmt.Fprintf(a.out, "Intercept %q is active.\n", st.Name)
	fmt.Fprintf(a.out, "  workload:   %s in namespace %s (%d pods)\n", st.Workload, st.Namespace, pods)
	if len(st.Ports) == 1 {
		fmt.Fprintf(a.out, "  service:    %s, port %s → container port %d\n", st.Service, portLabel(st.Ports[0]), st.Ports[0].AppPort)
	} else {
		fmt.Fprintf(a.out, "  service:    %s, %d ports:\n", st.Service, len(st.Ports))
		for _, p := range st.Ports {
			fmt.Fprintf(a.out, "    port %s → container port %d → local %s\n", portLabel(p), p.AppPort, p.LocalAddr)
		}
	}
	if tunnel.IsMirror(st.Mechanism) {
		fmt.Fprintf(a.out, "  mechanism:  %s (%s, while the app keeps answering)\n", st.Mechanism, takesOf(st.Mechanism, st.HTTPMatch, st.First().MechanismArgs))
	} else if len(st.HTTPMatch) > 0 {
		fmt.Fprintf(a.out, "  mechanism:  %s (only requests with the header; everyone else's reach the app)\n", st.Mechanism)
		fmt.Fprintf(a.out, "  header:     %s\n", headerLine(st.HTTPMatch))
		if r := requestLineRules(st.First().MechanismArgs); r != "" {
			fmt.Fprintf(a.out, "  requests:   %s\n", r)
		}
		fmt.Fprintf(a.out, "  try:        %s\n", tryHint(st))
	} else {
		fmt.Fprintf(a.out, "  mechanism:  %s (every connection)\n", st.Mechanism)
	}
	if st.Replace != "" {
		fmt.Fprintf(a.out, "  replaced:   the app container is stopped while you hold this; on leave its pods restart with it\n")
	}
	if st.PreviewURL != "" {
		fmt.Fprintf(a.out, "  preview:    %s\n", st.PreviewURL)
	}
	if len(st.Ports) == 1 {
		fmt.Fprintf(a.out, "  local:      %s\n", st.Ports[0].LocalAddr)
	}
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
