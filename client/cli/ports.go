package cli

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/detour-dev/detour/client/internal/daemon"
	"github.com/detour-dev/detour/client/internal/resolve"
	"github.com/detour-dev/detour/tunnel"
)

// parsePorts parses the --port flags of one intercept. Several are one
// intercept of several Service ports: each names its Service port, and
// no Service port or local port appears twice. A local port must not be a
// --to-pod port either: the daemon listens there itself.
func parsePorts(values []string, toPod []uint16) ([]resolve.PortSpec, error) {
	specs := make([]resolve.PortSpec, 0, len(values))
	for _, v := range values {
		spec, err := resolve.ParsePort(v)
		if err != nil {
			return nil, usage(err)
		}
		if len(values) > 1 && spec.Service == "" {
			return nil, usagef("--port %q: with several --port, each names its Service port, as in --port %d:http", v, spec.Local)
		}
		for j, prev := range specs {
			switch {
			case prev.Local == spec.Local:
				return nil, usagef("--port %q and --port %q both send to local port %d: give each Service port a local port of its own", values[j], v, spec.Local)
			case prev.Service == spec.Service:
				return nil, usagef("--port %q and --port %q both take Service port %q: give it once", values[j], v, spec.Service)
			}
		}
		if slices.Contains(toPod, spec.Local) {
			return nil, usagef("--port %q and --to-pod %d: local port %d cannot be both where intercepted traffic goes and a way into the pod", v, spec.Local, spec.Local)
		}
		specs = append(specs, spec)
	}
	return specs, nil
}

// targetPort is one port an intercept takes: the --port that named it,
// the Service port, the container port behind it, and the mechanism's
// arguments for it (they differ between ports only in app-protocol).
type targetPort struct {
	spec    resolve.PortSpec
	sp      corev1.ServicePort
	appPort uint16
	args    map[string][]string
}

// planPorts resolves every --port against the Service and the workload's
// pod template: one Service port each, no Service port or container port
// twice, all in one container (the agent serves one: the container the
// ports are in, which it returns).
func planPorts(w resolve.Workload, svc corev1.Service, specs []resolve.PortSpec, container string) ([]targetPort, string, error) {
	ports := make([]targetPort, 0, len(specs))
	served := ""
	for _, spec := range specs {
		sp, err := resolve.FindServicePort(svc, spec.Service)
		if err != nil {
			return nil, "", err
		}
		appPort, c, err := resolve.ContainerPort(w, sp, container)
		if err != nil {
			return nil, "", err
		}
		for _, prev := range ports {
			switch {
			case prev.sp.Port == sp.Port:
				return nil, "", usagef("--port %d:%s and --port %d:%s both take Service port %s of %s: give it once", prev.spec.Local, prev.spec.Service, spec.Local, spec.Service, servicePortName(sp), svc.Name)
			case prev.appPort == appPort:
				return nil, "", usagef("Service ports %s and %s of %s both target container port %d: intercept one of them (the agent takes the container port's traffic once)", servicePortName(prev.sp), servicePortName(sp), svc.Name, appPort)
			}
		}
		if served != "" && c != served {
			return nil, "", usagef("Service port %s is served by container %q, %s by %q: the agent of a pod serves one container, so one intercept takes ports of one container", servicePortName(ports[0].sp), served, servicePortName(sp), c)
		}
		served = c
		ports = append(ports, targetPort{spec: spec, sp: sp, appPort: appPort})
	}
	return ports, served, nil
}

func servicePortName(sp corev1.ServicePort) string { return portText(sp.Name, sp.Port) }

// checkAgentNames refuses an intercept name too long for the agents'
// names of its ports (daemon.AgentName), before the cluster changes.
func checkAgentNames(name string, specs []resolve.PortSpec) error {
	if len(specs) < 2 {
		return nil
	}
	// The longest suffix: the agents' names carry container ports, not
	// known yet; 65535 is the longest.
	if longest := daemon.AgentName(name, 1, 65535); len(longest) > tunnel.MaxNameLen {
		return usagef("intercept name %q is too long for %d ports: the agents know each port after the first as NAME.PORT, at most %d characters; choose a name of at most %d", name, len(specs), tunnel.MaxNameLen, tunnel.MaxNameLen-len(longest)+len(name))
	}
	return nil
}

// portLabel is a Service port as status and the summary show it.
func portLabel(p daemon.PortRequest) string { return portText(p.PortName, p.Port) }

func portText(name string, port int32) string {
	if name != "" {
		return fmt.Sprintf("%s (%d)", name, port)
	}
	return fmt.Sprint(port)
}
