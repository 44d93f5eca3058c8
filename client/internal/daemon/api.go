package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// InterceptRequest is what the CLI resolved and asks the daemon to hold.
type InterceptRequest struct {
	Name       string `json:"name"`
	Kubeconfig string `json:"kubeconfig,omitempty"`
	Context    string `json:"context,omitempty"`
	Namespace  string `json:"namespace"`
	Workload   string `json:"workload"` // kind/name
	Selector   string `json:"selector"` // label selector of its pods
	Service    string `json:"service"`
	// Ports are the intercepted ports of Service, at least one: one
	// intercept, held on every pod for each port (see AgentName), and left
	// as one.
	Ports     []PortRequest `json:"ports"`
	Mechanism string        `json:"mechanism"`
	// HTTPMatch are an http intercept's header rules as NAME=VALUE, and
	// PreviewURL its shareable link, when it has one.
	HTTPMatch  []string `json:"httpMatch,omitempty"`
	PreviewURL string   `json:"previewUrl,omitempty"`
	ToPod      []uint16 `json:"toPod,omitempty"`
	User       string   `json:"user"`
	WantEnv    bool     `json:"wantEnv,omitempty"`
	TimeoutSec int      `json:"timeoutSeconds,omitempty"`
	// Replace is the detour.dev/replace value the CLI put on the
	// workload's pod template (--replace): the daemon removes it when the
	// intercept ends (leave, quit), which gives the workload its app back.
	Replace string `json:"replace,omitempty"`
}

// PortRequest is one intercepted port of an intercept.
type PortRequest struct {
	PortName      string              `json:"portName,omitempty"`
	Port          int32               `json:"servicePort"`
	AppPort       uint16              `json:"appPort"`
	LocalAddr     string              `json:"localAddr"`
	MechanismArgs map[string][]string `json:"mechanismArgs,omitempty"`
}

// AgentName is the name under which the agents know port i (of app port
// appPort) of intercept name: name itself for the first port, as for an
// intercept of one port, and name.APPPORT for the others. An agent keys
// a session's intercepts by name (the same name on another port is a
// move), so each port needs a name of its own; the daemon refuses
// intercepts whose agent names would clash (see agentNameClash).
func AgentName(name string, i int, appPort uint16) string {
	if i == 0 {
		return name
	}
	return fmt.Sprintf("%s.%d", name, appPort)
}

// First is the first port of req (the zero PortRequest when it has none).
// Its Service port is the intercept's for what shows one: the preview
// link's default, the summary's curl hint.
func (req InterceptRequest) First() PortRequest {
	if len(req.Ports) == 0 {
		return PortRequest{}
	}
	return req.Ports[0]
}

// AgentNames are the agent names of every port of req, in order.
func (req InterceptRequest) AgentNames() []string {
	names := make([]string, len(req.Ports))
	for i, p := range req.Ports {
		names[i] = AgentName(req.Name, i, p.AppPort)
	}
	return names
}

// PodState is one pod's connection state for an intercept.
type PodState struct {
	Pod          string    `json:"pod"`
	State        string    `json:"state"` // connecting, active, reconnecting
	Since        time.Time `json:"since"`
	LastError    string    `json:"lastError,omitempty"`
	Reconnects   int       `json:"reconnects"`
	AgentVersion string    `json:"agentVersion,omitempty"`
	// Mirror is a mirror's counts on this pod's agent, as of its last
	// report (status asks afresh).
	Mirror *MirrorCounts `json:"mirror,omitempty"`
}

// MirrorCounts are a mirror's copies: sent whole, and dropped (never sent,
// or a connection's cut off) because the workstation fell behind, a body
// was too long, or the copy failed.
type MirrorCounts struct {
	Copied  uint64 `json:"copied"`
	Dropped uint64 `json:"dropped"`
}

// InterceptStatus is an intercept as status shows it.
type InterceptStatus struct {
	InterceptRequest
	Created time.Time `json:"created"`
	// State is active (every pod holds it), degraded (some pod is
	// connecting, reconnecting or refused), or dropped (see Dropped).
	State string `json:"state"`
	// Dropped says why the intercept no longer holds any pod: the agents
	// gave the traffic back while this workstation was silent (asleep).
	// `detour resume NAME` re-creates it.
	Dropped   string     `json:"dropped,omitempty"`
	DroppedAt *time.Time `json:"droppedAt,omitempty"`
	Pods      []PodState `json:"pods"`
	// Mirror is a mirror's counts over its pods (tcp-mirror: connections,
	// http-mirror: requests); nil for intercepts.
	Mirror *MirrorCounts     `json:"mirror,omitempty"`
	Env    map[string]string `json:"env,omitempty"` // only in the reply to create, when asked
	// ServiceCheck, only in the reply to create, says why the daemon could
	// not confirm that the Service sends new connections to the agents
	// holding the intercept; empty when it did (or had nothing to check).
	ServiceCheck string `json:"serviceCheck,omitempty"`
}

// Status is the daemon's whole state.
type Status struct {
	Version    string            `json:"version"`
	PID        int               `json:"pid"`
	Started    time.Time         `json:"started"`
	Intercepts []InterceptStatus `json:"intercepts"`
}

// ErrorReply is the body of every non-2xx answer.
type ErrorReply struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"`
}

// Dir is where the daemon keeps its socket and log: $DETOUR_HOME, else the
// user's cache directory (~/.cache/detour).
func Dir() (string, error) {
	if d := os.Getenv("DETOUR_HOME"); d != "" {
		return d, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find a directory for the daemon's socket (set DETOUR_HOME): %w", err)
	}
	return filepath.Join(base, "detour"), nil
}

// SocketPath is the daemon's unix socket.
func SocketPath() (string, error) {
	d, err := Dir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "daemon.sock"), nil
}
