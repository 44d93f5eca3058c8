package webhook

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/internal/podport"
)

// InjectConfig is what injection needs besides the pod and its Services.
type InjectConfig struct {
	// AgentImage is the agent image used when the pod has no
	// detour.dev/agent-image annotation.
	AgentImage string
	// PullPolicy of the agent and init containers.
	PullPolicy corev1.PullPolicy
	// AgentResources and InitResources are the containers' requests and
	// limits.
	AgentResources corev1.ResourceRequirements
	InitResources  corev1.ResourceRequirements
	// ClusterCIDRs are the pod and Service ranges agents dial for a
	// local process (the agent's --cluster-cidrs); set by detour install.
	ClusterCIDRs []string
	// AgentMaxIdle, when positive, is the agents' --max-idle, and their pods
	// get annotations.IdleLabel, which the idle reaper watches (idle.go).
	AgentMaxIdle time.Duration
}

// DefaultInjectConfig is the configuration the webhook starts from.
func DefaultInjectConfig() InjectConfig {
	return InjectConfig{
		AgentImage: "detour.local/detour:dev",
		PullPolicy: corev1.PullIfNotPresent,
		AgentResources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("10m"),
				corev1.ResourceMemory: resource.MustParse("32Mi"),
			},
			Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
		},
		InitResources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("10m"),
				corev1.ResourceMemory: resource.MustParse("16Mi"),
			},
			Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
		},
	}
}

// defaultContainerAnnotation tells kubectl which container logs and exec
// mean; the webhook points it at the app so the agent never becomes the
// default.
const defaultContainerAnnotation = "kubectl.kubernetes.io/default-container"

// appPort is one app container port to intercept and how it is reached.
type appPort struct {
	number int32
	name   string // the container port's name, "" when it has none
	// byName: some non-headless Service reaches it through a named
	// targetPort; byNumber: something reaches it by number (a numeric
	// targetPort, a headless Service, a number in detour.dev/ports).
	byName, byNumber bool
}

// inject returns a copy of pod carrying the agent. services are the Services
// of the pod's namespace (any order); the ones whose selector matches the pod
// decide the container, the ports and the mode unless the annotations do.
// It is pure: the same inputs always give the same pod.
func inject(pod *corev1.Pod, services []corev1.Service, cfg InjectConfig) (*corev1.Pod, error) {
	out := pod.DeepCopy()
	idx, ports, err := choosePorts(out, matchingServices(out, services))
	if err != nil {
		return nil, err
	}
	if err := checkAgentPortsFree(out); err != nil {
		return nil, err
	}
	mode := annotations.ModeRename
	for _, p := range ports {
		if p.byNumber || !p.byName {
			mode = annotations.ModeRedirect
		}
	}
	app := &out.Spec.Containers[idx]
	image := cfg.AgentImage
	if v := strings.TrimSpace(out.Annotations[annotations.AgentImage]); v != "" {
		image = v
	}

	replace, replaced, err := replaceSpec(out)
	if err != nil {
		return nil, err
	}
	status := annotations.Status{Mode: mode, Container: app.Name, Replaced: replaced}
	agent := agentContainer(app, image, cfg)
	if replaced {
		replaceApp(out, app, image, cfg)
		agent.Args = append(agent.Args, "--replaced-grace", replace.GraceDuration().String())
	}
	switch mode {
	case annotations.ModeRename:
		used := usedPorts(out)
		var listen []string
		next := int32(annotations.FirstListenPort)
		for _, p := range ports {
			for used[next] {
				next++
			}
			used[next] = true
			renamePort(out, app, p)
			agent.Ports = append(agent.Ports, corev1.ContainerPort{Name: p.name, ContainerPort: next, Protocol: corev1.ProtocolTCP})
			listen = append(listen, fmt.Sprintf("%d:%d", next, p.number))
			status.Ports = append(status.Ports, annotations.PortMap{Name: p.name, AppPort: p.number, AgentPort: next})
		}
		agent.Args = append(agent.Args, "--listen", strings.Join(listen, ","))
	case annotations.ModeRedirect:
		numbers := make([]string, 0, len(ports))
		for _, p := range ports {
			numbers = append(numbers, strconv.Itoa(int(p.number)))
			status.Ports = append(status.Ports, annotations.PortMap{Name: p.name, AppPort: p.number, AgentPort: annotations.RedirectPort})
		}
		list := strings.Join(numbers, ",")
		agent.Args = append(agent.Args, "--redirect-addr", fmt.Sprintf(":%d", annotations.RedirectPort), "--redirect-ports", list)
		probes := redirectProbes(out, ports)
		out.Spec.InitContainers = append(out.Spec.InitContainers, initContainer(image, list, probes, cfg))
	}
	mountTLSSecrets(out, &agent)
	out.Spec.Containers = append(out.Spec.Containers, agent)

	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[annotations.Injected] = status.Encode()
	if cfg.AgentMaxIdle > 0 {
		if out.Labels == nil {
			out.Labels = map[string]string{}
		}
		out.Labels[annotations.IdleLabel] = annotations.IdleLabelValue
	}
	if _, ok := out.Annotations[defaultContainerAnnotation]; !ok {
		out.Annotations[defaultContainerAnnotation] = app.Name
	}
	return out, nil
}

// matchingServices returns the Services whose selector selects pod, sorted
// by name so that the outcome does not depend on listing order.
func matchingServices(pod *corev1.Pod, services []corev1.Service) []corev1.Service {
	var out []corev1.Service
	for _, s := range services {
		if podport.Selects(s, pod.Labels) {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b corev1.Service) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// choosePorts picks the app container (its index) and the ports to
// intercept: detour.dev/container and detour.dev/ports when set, else the
// container and ports the Services target.
func choosePorts(pod *corev1.Pod, services []corev1.Service) (int, []appPort, error) {
	if len(pod.Spec.Containers) == 0 {
		// The apiserver rejects such a pod after admission; until then there
		// is no container to serve a port (serviceRefs would name index 0).
		return 0, nil, fmt.Errorf("%w: the pod has no containers", ErrNoContainer)
	}
	idx := -1
	if name := pod.Annotations[annotations.Container]; name != "" {
		idx = slices.IndexFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == name })
		if idx < 0 {
			return 0, nil, fmt.Errorf("%w: %s=%q", ErrNoContainer, annotations.Container, name)
		}
	}
	refs := serviceRefs(pod, services, idx)
	var (
		ports []appPort
		err   error
	)
	if list := pod.Annotations[annotations.Ports]; strings.TrimSpace(list) != "" {
		idx, ports, err = annotatedPorts(pod, idx, list)
		if err != nil {
			return 0, nil, err
		}
	} else {
		for _, r := range refs {
			if idx < 0 {
				idx = r.container
			}
			if r.container == idx {
				ports = append(ports, appPort{number: r.number, name: r.name})
			}
		}
	}
	if len(ports) == 0 {
		return 0, nil, fmt.Errorf("%w: no Service selects the pod on a TCP port, and no %s annotation lists one", ErrNoPorts, annotations.Ports)
	}
	// Merge duplicates and record how each port is reached.
	merged := map[int32]*appPort{}
	var order []int32
	for _, p := range ports {
		m, ok := merged[p.number]
		if !ok {
			m = &appPort{number: p.number, name: p.name}
			merged[p.number] = m
			order = append(order, p.number)
		}
		m.byNumber = m.byNumber || p.byNumber
	}
	for _, r := range refs {
		if m, ok := merged[r.number]; ok && r.container == idx {
			m.byName = m.byName || r.byName
			m.byNumber = m.byNumber || r.byNumber
		}
	}
	slices.Sort(order)
	out := make([]appPort, 0, len(order))
	for _, n := range order {
		out = append(out, *merged[n])
	}
	return idx, out, nil
}

// serviceRef is one Service port resolved to a container port of the pod.
type serviceRef struct {
	container        int
	number           int32
	name             string
	byName, byNumber bool
}

// serviceRefs resolves every TCP port of services to a container port of
// pod; only containers[only] when only ≥ 0 (the rule: internal/podport).
func serviceRefs(pod *corev1.Pod, services []corev1.Service, only int) []serviceRef {
	var refs []serviceRef
	for _, s := range services {
		headless := s.Spec.ClusterIP == corev1.ClusterIPNone
		for _, sp := range s.Spec.Ports {
			if !podport.TCP(sp) {
				continue
			}
			tp := podport.Target(sp)
			ci, cp, found := findContainerPort(pod, tp, only)
			if !found {
				if tp.Type == intstr.String {
					continue // a named targetPort the pod lacks sends it no traffic
				}
				// An undeclared number: the app may still listen on it.
				ci = max(only, 0)
				cp = corev1.ContainerPort{ContainerPort: tp.IntVal}
			}
			byName := tp.Type == intstr.String && !headless
			refs = append(refs, serviceRef{container: ci, number: cp.ContainerPort, name: cp.Name, byName: byName, byNumber: !byName})
		}
	}
	return refs
}

// findContainerPort finds the TCP container port that tp names or numbers,
// in containers[only] when only ≥ 0, else in the first container that has it.
func findContainerPort(pod *corev1.Pod, tp intstr.IntOrString, only int) (int, corev1.ContainerPort, bool) {
	if ms := podport.Find(pod.Spec.Containers, tp, only); len(ms) > 0 {
		return ms[0].Container, ms[0].Port, true
	}
	return 0, corev1.ContainerPort{}, false
}

// annotatedPorts reads detour.dev/ports: container port names or numbers.
// Names must exist; numbers may be undeclared (the app may still listen).
func annotatedPorts(pod *corev1.Pod, idx int, list string) (int, []appPort, error) {
	var ports []appPort
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		var tp intstr.IntOrString
		if n, err := strconv.ParseUint(item, 10, 16); err == nil {
			if n == 0 {
				return 0, nil, fmt.Errorf("%w: %q is not a port", ErrBadPortsAnnotation, item)
			}
			tp = intstr.FromInt32(int32(n))
		} else {
			tp = intstr.FromString(item)
		}
		ci, cp, found := findContainerPort(pod, tp, idx)
		switch {
		case !found && tp.Type == intstr.String:
			return 0, nil, fmt.Errorf("%w: no container port is named %q", ErrBadPortsAnnotation, item)
		case !found:
			ci, cp = max(idx, 0), corev1.ContainerPort{ContainerPort: tp.IntVal}
		}
		if idx < 0 {
			idx = ci
		}
		if ci != idx {
			return 0, nil, fmt.Errorf("%w: port %q is not in container %q; set %s", ErrBadPortsAnnotation, item, pod.Spec.Containers[idx].Name, annotations.Container)
		}
		ports = append(ports, appPort{number: cp.ContainerPort, name: cp.Name, byNumber: tp.Type == intstr.Int})
	}
	return idx, ports, nil
}

// usedPorts is every container port number in the pod plus the agent's own.
func usedPorts(pod *corev1.Pod) map[int32]bool {
	used := map[int32]bool{}
	for _, p := range annotations.FixedPorts() {
		used[p] = true
	}
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			for _, p := range c.Ports {
				used[p.ContainerPort] = true
			}
		}
	}
	return used
}

func checkAgentPortsFree(pod *corev1.Pod) error {
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			for _, p := range c.Ports {
				if slices.Contains(annotations.FixedPorts(), p.ContainerPort) {
					return fmt.Errorf("%w: container %q declares port %d, which the agent uses", ErrPortConflict, c.Name, p.ContainerPort)
				}
			}
		}
	}
	return nil
}

// renamePort gives the app's named port p a new name (its old name goes to
// the agent's listener) and turns probes and lifecycle handlers that named it
// into the number, so they keep reaching the app directly.
func renamePort(pod *corev1.Pod, app *corev1.Container, p appPort) {
	newName := freePortName(pod, p.name)
	for i := range app.Ports {
		if app.Ports[i].Name == p.name {
			app.Ports[i].Name = newName
		}
	}
	rewrite := func(h *corev1.ProbeHandler) {
		if h == nil {
			return
		}
		if h.HTTPGet != nil && h.HTTPGet.Port.Type == intstr.String && h.HTTPGet.Port.StrVal == p.name {
			h.HTTPGet.Port = intstr.FromInt32(p.number)
		}
		if h.TCPSocket != nil && h.TCPSocket.Port.Type == intstr.String && h.TCPSocket.Port.StrVal == p.name {
			h.TCPSocket.Port = intstr.FromInt32(p.number)
		}
	}
	for _, probe := range []*corev1.Probe{app.LivenessProbe, app.ReadinessProbe, app.StartupProbe} {
		if probe != nil {
			rewrite(&probe.ProbeHandler)
		}
	}
	if lc := app.Lifecycle; lc != nil {
		for _, h := range []*corev1.LifecycleHandler{lc.PostStart, lc.PreStop} {
			if h == nil {
				continue
			}
			ph := corev1.ProbeHandler{HTTPGet: h.HTTPGet, TCPSocket: h.TCPSocket}
			rewrite(&ph)
		}
	}
}

// firstProbePort is where redirect mode starts picking probe ports.
const firstProbePort = 15100

// redirectProbes points the kubelet's probes and lifecycle hooks for an
// intercepted port (by name or number, in any of the pod's containers, to
// the pod's own address) at a probe port, which the init container
// redirects straight to the app port: past the agent, so a developer at a
// breakpoint never fails the app's liveness probe and a readiness probe
// never sends the pod out of its Services. It returns the init container's
// --probe-ports pairs.
func redirectProbes(pod *corev1.Pod, ports []appPort) []string {
	intercepted := map[int32]bool{}
	for _, p := range ports {
		intercepted[p.number] = true
	}
	used := usedPorts(pod)
	probePort := map[int32]int32{} // app port → its probe port
	var pairs []string
	portFor := func(app int32) int32 {
		if q, ok := probePort[app]; ok {
			return q
		}
		q := int32(firstProbePort)
		for used[q] {
			q++
		}
		used[q] = true
		probePort[app] = q
		pairs = append(pairs, fmt.Sprintf("%d:%d", q, app))
		return q
	}
	for ci := range pod.Spec.Containers {
		c := &pod.Spec.Containers[ci]
		// resolve gives the number a probe port means in c, when it is
		// an intercepted one.
		resolve := func(port intstr.IntOrString) (int32, bool) {
			n := port.IntVal
			if port.Type == intstr.String {
				i := slices.IndexFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == port.StrVal })
				if i < 0 {
					return 0, false
				}
				n = c.Ports[i].ContainerPort
			}
			return n, intercepted[n]
		}
		rewrite := func(h *corev1.ProbeHandler) {
			if h == nil {
				return
			}
			if g := h.HTTPGet; g != nil && g.Host == "" {
				if n, ok := resolve(g.Port); ok {
					g.Port = intstr.FromInt32(portFor(n))
				}
			}
			if ts := h.TCPSocket; ts != nil && ts.Host == "" {
				if n, ok := resolve(ts.Port); ok {
					ts.Port = intstr.FromInt32(portFor(n))
				}
			}
			if g := h.GRPC; g != nil && intercepted[g.Port] {
				g.Port = portFor(g.Port)
			}
		}
		for _, probe := range []*corev1.Probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
			if probe != nil {
				rewrite(&probe.ProbeHandler)
			}
		}
		if lc := c.Lifecycle; lc != nil {
			for _, h := range []*corev1.LifecycleHandler{lc.PostStart, lc.PreStop} {
				if h != nil {
					rewrite(&corev1.ProbeHandler{HTTPGet: h.HTTPGet, TCPSocket: h.TCPSocket})
				}
			}
		}
	}
	return pairs
}

// freePortName derives the app port's new name from its old one: "dt-" in
// front, cut to the 15 characters a port name may have, unique in the pod.
func freePortName(pod *corev1.Pod, old string) string {
	taken := map[string]bool{}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			taken[p.Name] = true
		}
	}
	for i := 0; ; i++ {
		prefix := "dt-"
		if i > 0 {
			prefix = fmt.Sprintf("dt%d-", i)
		}
		name := strings.TrimRight(truncate(prefix+old, 15), "-")
		if !taken[name] {
			return name
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// agentContainer builds the sidecar without its mode's flags and ports.
func agentContainer(app *corev1.Container, image string, cfg InjectConfig) corev1.Container {
	env := []corev1.EnvVar{
		fieldEnv("POD_NAME", "metadata.name"),
		fieldEnv("POD_NAMESPACE", "metadata.namespace"),
		fieldEnv("POD_IP", "status.podIP"),
	}
	runtimeVar := map[string]bool{}
	for _, name := range annotations.RuntimeVariables() {
		runtimeVar[name] = true
	}
	for _, e := range app.Env {
		if e.Name == "POD_NAME" || e.Name == "POD_NAMESPACE" || e.Name == "POD_IP" || e.Name == egressAllowEnv {
			continue
		}
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			// Never in the agent: a port-forward must be no way around
			// RBAC for a Secret. The CLI reads Secret-backed values with
			// the user's own permissions.
			continue
		}
		e = *e.DeepCopy()
		// A resource reference without a container means "this container":
		// point it at the app so the agent reports the app's value.
		if e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.ContainerName == "" {
			e.ValueFrom.ResourceFieldRef.ContainerName = app.Name
		}
		if runtimeVar[e.Name] {
			// The app's Go runtime setting, kept for clients under
			// another name: the agent reports it as the app's.
			e.Name = annotations.AppRuntimeEnvPrefix + e.Name
		}
		env = append(env, e)
	}
	// The agent's own settings come after the app's variables, so an app
	// variable of the same name cannot change them, and as env entries they
	// win over anything the app's envFrom sources hold.
	env = append(env, fieldEnv(egressAllowEnv, "metadata.annotations['"+annotations.EgressAllow+"']"))
	env = append(env, agentRuntimeEnv()...)
	var envFrom []corev1.EnvFromSource
	for _, e := range app.EnvFrom {
		if e.SecretRef != nil {
			continue // as for secretKeyRef above
		}
		envFrom = append(envFrom, *e.DeepCopy())
	}
	return corev1.Container{
		Name:            annotations.AgentContainerName,
		Image:           image,
		ImagePullPolicy: cfg.PullPolicy,
		Command:         []string{annotations.AgentBinary},
		Args:            agentArgs(cfg),
		Env:             env,
		EnvFrom:         envFrom,
		Ports: []corev1.ContainerPort{
			{Name: "detour-health", ContainerPort: annotations.HealthPort, Protocol: corev1.ProtocolTCP},
			{Name: "detour-metrics", ContainerPort: annotations.MetricsPort, Protocol: corev1.ProtocolTCP},
		},
		Resources: *cfg.AgentResources.DeepCopy(),
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(annotations.HealthPort)}},
			PeriodSeconds: 2, FailureThreshold: 3,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(annotations.HealthPort)}},
			PeriodSeconds: 10, FailureThreshold: 3,
		},
		SecurityContext: restricted(),
	}
}

// restricted is the agent image's containers' security context (but the
// nftables init's): the image's non-root user, nothing writable, no
// capabilities.
func restricted() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsNonRoot:             ptr(true),
		RunAsUser:                ptr(int64(65532)),
		ReadOnlyRootFilesystem:   ptr(true),
		AllowPrivilegeEscalation: ptr(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

const egressAllowEnv = "DETOUR_EGRESS_ALLOW"

// agentArgs are the agent's flags that do not depend on the pod's ports
// (inject adds those).
func agentArgs(cfg InjectConfig) []string {
	args := []string{
		"run",
		"--tunnel-addr", fmt.Sprintf("127.0.0.1:%d", annotations.TunnelPort),
		"--health-addr", fmt.Sprintf(":%d", annotations.HealthPort),
		"--metrics-addr", fmt.Sprintf(":%d", annotations.MetricsPort),
	}
	if len(cfg.ClusterCIDRs) > 0 {
		args = append(args, "--cluster-cidrs", strings.Join(cfg.ClusterCIDRs, ","))
	}
	if cfg.AgentMaxIdle > 0 {
		args = append(args, "--max-idle", cfg.AgentMaxIdle.String())
	}
	return args
}

// agentRuntimeEnv is the agent's own Go runtime configuration, one entry
// for each of annotations.RuntimeVariables: GOMEMLIMIT is the agent's
// memory limit in bytes, so the collector works harder before the kernel
// kills the container; GOMAXPROCS is empty, which leaves the runtime's
// default (the container's CPU limit); GOGC the default, GODEBUG none.
func agentRuntimeEnv() []corev1.EnvVar {
	return []corev1.EnvVar{
		{Name: "GOGC", Value: "100"},
		{Name: "GOMEMLIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
			ContainerName: annotations.AgentContainerName, Resource: "limits.memory", Divisor: resource.MustParse("1"),
		}}},
		{Name: "GOMAXPROCS", Value: ""},
		{Name: "GODEBUG", Value: ""},
	}
}

// initContainer programs the pod's nftables redirect: NET_ADMIN only, root
// because netlink's NET_ADMIN check wants the capability in the effective
// set, which a non-root user does not get from the runtime.
// probes are the --probe-ports pairs ("15100:8080"), if any.
func initContainer(image, ports string, probes []string, cfg InjectConfig) corev1.Container {
	args := []string{"init", "--ports", ports, "--agent-port", strconv.Itoa(annotations.RedirectPort)}
	if len(probes) > 0 {
		args = append(args, "--probe-ports", strings.Join(probes, ","))
	}
	return corev1.Container{
		Name:            annotations.InitContainerName,
		Image:           image,
		ImagePullPolicy: cfg.PullPolicy,
		Command:         []string{annotations.AgentBinary},
		Args:            args,
		Resources:       *cfg.InitResources.DeepCopy(),
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr(false),
			RunAsUser:                ptr(int64(0)),
			ReadOnlyRootFilesystem:   ptr(true),
			AllowPrivilegeEscalation: ptr(false),
			Capabilities: &corev1.Capabilities{
				Drop: []corev1.Capability{"ALL"},
				Add:  []corev1.Capability{"NET_ADMIN"},
			},
		},
	}
}

// mountTLSSecrets mounts the secrets the TLS annotations name into the agent.
func mountTLSSecrets(pod *corev1.Pod, agent *corev1.Container) {
	for _, s := range []struct{ annotation, volume, path string }{
		{annotations.TerminatingTLSSecret, annotations.TerminatingTLSVolume, annotations.TerminatingTLSMountPath},
		{annotations.OriginatingTLSSecret, annotations.OriginatingTLSVolume, annotations.OriginatingTLSMountPath},
	} {
		name := strings.TrimSpace(pod.Annotations[s.annotation])
		if name == "" {
			continue
		}
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
			Name:         s.volume,
			VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: name}},
		})
		agent.VolumeMounts = append(agent.VolumeMounts, corev1.VolumeMount{Name: s.volume, MountPath: s.path, ReadOnly: true})
	}
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}

func ptr[T any](v T) *T { return &v }
