package annotations

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// Annotation keys, set on a workload's pod template (the webhook reads them on
// the pod).
const (
	// Inject opts a pod in: the webhook injects the agent only when it is
	// InjectEnabled.
	Inject        = "detour.dev/inject"
	InjectEnabled = "enabled"

	// AgentImage overrides the webhook's configured agent image.
	AgentImage = "detour.dev/agent-image"
	// Container names the app container to intercept, when the pod has more
	// than one.
	Container = "detour.dev/container"
	// Ports lists the app ports to intercept, comma-separated container
	// port names or numbers ("http,8443"); without it the webhook takes the
	// ports the pod's Services target.
	Ports = "detour.dev/ports"
	// TerminatingTLSSecret and OriginatingTLSSecret name Secrets (in the
	// pod's namespace) mounted into the agent: the first to terminate TLS
	// from clients, the second to speak TLS to the app.
	TerminatingTLSSecret = "detour.dev/terminating-tls-secret"
	OriginatingTLSSecret = "detour.dev/originating-tls-secret"

	// EgressAllow lists further destinations (CIDRs, or *) that agents of
	// the pod may dial for a local process, besides the cluster's ranges
	// and names; link-local and metadata addresses stay refused.
	EgressAllow = "detour.dev/egress-allow"

	// Injected is the status annotation the webhook writes on a pod it
	// injected; its value is a JSON Status. A pod carrying it is never
	// injected again.
	Injected = "detour.dev/injected"
)

// Names of what the webhook adds to a pod.
const (
	AgentContainerName = "detour-agent"
	InitContainerName  = "detour-init"

	// Volume names and mount paths of the TLS secrets in the agent.
	TerminatingTLSVolume    = "detour-terminating-tls"
	OriginatingTLSVolume    = "detour-originating-tls"
	TerminatingTLSMountPath = "/var/run/detour/tls/terminating"
	OriginatingTLSMountPath = "/var/run/detour/tls/originating"

	// AgentBinary is where the image holds the agent.
	AgentBinary = "/usr/local/bin/detour-agent"
)

// The agent's fixed ports.
const (
	// TunnelPort is where clients reach the agent, on 127.0.0.1 only,
	// through a port-forward.
	TunnelPort = 9900
	// HealthPort serves /healthz and /readyz; MetricsPort serves /metrics.
	HealthPort  = 9901
	MetricsPort = 9902
	// RedirectPort receives the connections nftables redirects (redirect
	// mode).
	RedirectPort = 15001
	// FirstListenPort is where port-rename mode starts picking agent listen
	// ports, skipping any port the pod already uses.
	FirstListenPort = 15080
)

// Mode is how traffic reaches the agent.
type Mode string

const (
	// ModeRename: the Service's named targetPort now names an agent port;
	// no init container, no privileges.
	ModeRename Mode = "rename"
	// ModeRedirect: an init container programs nftables to redirect the app
	// ports to the agent's RedirectPort.
	ModeRedirect Mode = "redirect"
)

// PortMap is one intercepted app port and where the agent receives its
// traffic: its own listen port in rename mode, RedirectPort in redirect mode.
type PortMap struct {
	// Name is the app port's original name, empty when it had none.
	Name      string `json:"name,omitempty"`
	AppPort   int32  `json:"appPort"`
	AgentPort int32  `json:"agentPort"`
}

// Status is the value of the Injected annotation: what the webhook did.
type Status struct {
	Mode      Mode      `json:"mode"`
	Container string    `json:"container"`
	Ports     []PortMap `json:"ports"`
	// Replaced: the app container's command was swapped for the sleeper
	// (replace mode, replace.go).
	Replaced bool `json:"replaced,omitempty"`
}

// ErrBadStatus means an Injected annotation could not be read.
var ErrBadStatus = errors.New("malformed detour.dev/injected annotation")

// Encode renders s as the Injected annotation's value.
func (s Status) Encode() string {
	b, err := json.Marshal(s)
	if err != nil { // a struct of strings and ints always marshals
		panic(fmt.Sprintf("marshal injection status: %v", err))
	}
	return string(b)
}

// ParseStatus reads an Injected annotation's value.
func ParseStatus(v string) (Status, error) {
	var s Status
	if err := json.Unmarshal([]byte(v), &s); err != nil {
		return Status{}, fmt.Errorf("%w: %w", ErrBadStatus, err)
	}
	if s.Mode != ModeRename && s.Mode != ModeRedirect {
		return Status{}, fmt.Errorf("%w: mode %q", ErrBadStatus, s.Mode)
	}
	return s, nil
}

// AppPorts lists the intercepted app port numbers, in order.
func (s Status) AppPorts() []int32 {
	out := make([]int32, 0, len(s.Ports))
	for _, p := range s.Ports {
		out = append(out, p.AppPort)
	}
	return out
}

// FixedPorts lists the agent ports that no app container may use.
func FixedPorts() []int32 {
	return slices.Clone(fixedPorts[:])
}

var fixedPorts = [...]int32{TunnelPort, HealthPort, MetricsPort, RedirectPort}

// The Go runtime's variables. The webhook sets the agent's own values after
// the variables it copies from the app (an env entry wins over envFrom), so
// the app's settings never configure the agent, and keeps the app's env
// entries of these names under AppRuntimeEnvPrefix+name, from which the
// agent reports them to clients as the app's.
const AppRuntimeEnvPrefix = "DETOUR_APP_"

// RuntimeVariables lists the Go runtime variables the agent sets for itself.
func RuntimeVariables() []string { return slices.Clone(runtimeVariables[:]) }

var runtimeVariables = [...]string{"GOGC", "GOMEMLIMIT", "GOMAXPROCS", "GODEBUG"}

// SystemNamespace is where detour install puts the webhook.
const SystemNamespace = "detour-system"

// ExcludedNamespaces never get an agent, whatever their pods say: the
// control plane's and detour's own. This is the one list: the webhook
// checks it (webhook/decide.go), its configuration's namespaceSelector
// in deploy/base lists it (client/install tests the manifest against it),
// and detour install skips these namespaces' pods.
var ExcludedNamespaces = []string{"kube-system", "kube-public", "kube-node-lease", SystemNamespace}

// Excluded says whether ns is one of ExcludedNamespaces.
func Excluded(ns string) bool { return slices.Contains(ExcludedNamespaces, ns) }
