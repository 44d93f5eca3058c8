package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/printers"

	"github.com/detour-dev/detour/client/internal/daemon"
)

// The types of this file are detour's machine output: `detour status -o
// json|yaml` and `detour intercept -o json|yaml`. They are documented
// field by field in docs/status-json.md and pinned by
// testdata/status.golden.json. They are not the daemon's API types: a
// field added to daemon.InterceptRequest stays internal until it is copied
// here (and documented, and the golden file rewritten).

// StatusSchemaVersion is StatusReport's schemaVersion.
const StatusSchemaVersion = 1

// StatusReport is `detour status -o json`: stable field names.
type StatusReport struct {
	// SchemaVersion changes only when a field is renamed, removed or
	// changes meaning (docs/status-json.md); fields are added freely.
	SchemaVersion int               `json:"schemaVersion"`
	Client        string            `json:"clientVersion"`
	Daemon        *DaemonReport     `json:"daemon"`
	Intercepts    []InterceptReport `json:"intercepts"`
}

// DaemonReport describes the running daemon.
type DaemonReport struct {
	Version string    `json:"version"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
}

// InterceptReport is one intercept: what `detour intercept` resolved and
// the daemon holds, and its state (status's intercepts[], and the whole of
// `detour intercept -o json`).
type InterceptReport struct {
	Name          string              `json:"name"`
	Kubeconfig    string              `json:"kubeconfig,omitempty"`
	Context       string              `json:"context,omitempty"`
	Namespace     string              `json:"namespace"`
	Workload      string              `json:"workload"`
	Selector      string              `json:"selector"`
	Service       string              `json:"service"`
	PortName      string              `json:"portName,omitempty"`
	ServicePort   int32               `json:"servicePort"`
	AppPort       uint16              `json:"appPort"`
	Mechanism     string              `json:"mechanism"`
	MechanismArgs map[string][]string `json:"mechanismArgs,omitempty"`
	HTTPMatch     []string            `json:"httpMatch,omitempty"`
	PreviewURL    string              `json:"previewUrl,omitempty"`
	LocalAddr     string              `json:"localAddr"`
	ToPod         []uint16            `json:"toPod,omitempty"`
	User          string              `json:"user"`
	WantEnv       bool                `json:"wantEnv,omitempty"`
	TimeoutSec    int                 `json:"timeoutSeconds,omitempty"`
	Ports         []PortReport        `json:"ports"`
	Created       time.Time           `json:"created"`
	State         string              `json:"state"`
	Dropped       string              `json:"dropped,omitempty"`
	DroppedAt     *time.Time          `json:"droppedAt,omitempty"`
	Pods          []PodReport         `json:"pods"`
	// Mirror: a mirror's copies over its pods; absent for intercepts.
	Mirror *MirrorReport `json:"mirror,omitempty"`
	// Replaced: the workload's app container is stopped while this
	// intercept holds (--replace); on leave its pods restart with it.
	Replaced bool `json:"replaced,omitempty"`
}

// MirrorReport is a mirror's copies: sent whole, and dropped (never sent,
// or cut off: tcp-mirror connections, http-mirror requests).
type MirrorReport struct {
	Copied  uint64 `json:"copied"`
	Dropped uint64 `json:"dropped"`
}

func newMirrorReport(m *daemon.MirrorCounts) *MirrorReport {
	if m == nil {
		return nil
	}
	return &MirrorReport{Copied: m.Copied, Dropped: m.Dropped}
}

// PortReport is one port of an intercept. The intercept's own portName,
// servicePort, appPort, localAddr and mechanismArgs are its first port's
// (those of an intercept of one port, as before ports[] existed).
type PortReport struct {
	PortName      string              `json:"portName,omitempty"`
	ServicePort   int32               `json:"servicePort"`
	AppPort       uint16              `json:"appPort"`
	LocalAddr     string              `json:"localAddr"`
	MechanismArgs map[string][]string `json:"mechanismArgs,omitempty"`
	AgentName     string              `json:"agentName"`
}

// PodReport is one pod's connection state for an intercept.
type PodReport struct {
	Pod          string    `json:"pod"`
	State        string    `json:"state"`
	Since        time.Time `json:"since"`
	LastError    string    `json:"lastError,omitempty"`
	Reconnects   int       `json:"reconnects"`
	AgentVersion string    `json:"agentVersion,omitempty"`
	// Mirror: a mirror's copies on this pod's agent, as of its last report.
	Mirror *MirrorReport `json:"mirror,omitempty"`
}

// newStatusReport is the report of a daemon's status; st nil means no
// daemon answered.
func newStatusReport(client string, st *daemon.Status) StatusReport {
	rep := StatusReport{SchemaVersion: StatusSchemaVersion, Client: client, Intercepts: []InterceptReport{}}
	if st == nil {
		return rep
	}
	rep.Daemon = &DaemonReport{Version: st.Version, PID: st.PID, Started: st.Started}
	for _, ic := range st.Intercepts {
		rep.Intercepts = append(rep.Intercepts, newInterceptReport(ic))
	}
	return rep
}

// newInterceptReport copies the public fields of an intercept's status.
// The app's environment (st.Env) is never among them: it may hold Secret
// values, and goes only to the files asked for.
func newInterceptReport(st daemon.InterceptStatus) InterceptReport {
	first := st.First()
	r := InterceptReport{
		Name: st.Name, Kubeconfig: st.Kubeconfig, Context: st.Context, Namespace: st.Namespace,
		Workload: st.Workload, Selector: st.Selector, Service: st.Service,
		PortName: first.PortName, ServicePort: first.Port, AppPort: first.AppPort,
		Mechanism: st.Mechanism, MechanismArgs: first.MechanismArgs, HTTPMatch: st.HTTPMatch, PreviewURL: st.PreviewURL,
		LocalAddr: first.LocalAddr, ToPod: st.ToPod, User: st.User, WantEnv: st.WantEnv, TimeoutSec: st.TimeoutSec,
		Ports:   make([]PortReport, len(st.Ports)),
		Created: st.Created, State: st.State, Dropped: st.Dropped, DroppedAt: st.DroppedAt,
		Mirror: newMirrorReport(st.Mirror), Replaced: st.Replace != "",
	}
	names := st.AgentNames()
	for i, p := range st.Ports {
		r.Ports[i] = PortReport{PortName: p.PortName, ServicePort: p.Port, AppPort: p.AppPort, LocalAddr: p.LocalAddr, MechanismArgs: p.MechanismArgs, AgentName: names[i]}
	}
	if st.Pods != nil {
		r.Pods = make([]PodReport, 0, len(st.Pods))
	}
	for _, p := range st.Pods {
		r.Pods = append(r.Pods, PodReport{Pod: p.Pod, State: p.State, Since: p.Since, LastError: p.LastError, Reconnects: p.Reconnects, AgentVersion: p.AgentVersion, Mirror: newMirrorReport(p.Mirror)})
	}
	return r
}

// printStructured prints v (a report) as json or yaml through
// cli-runtime's printers, as kubectl prints objects. Those print
// runtime.Objects; a report is not a Kubernetes object (no apiVersion or
// kind, no deep-copy), so it goes to them as a runtime.Unknown holding its
// JSON, which both printers take as it is.
func printStructured(w io.Writer, format string, v any) error {
	var p printers.ResourcePrinter
	switch format {
	case "json":
		p = &printers.JSONPrinter{}
	case "yaml":
		p = &printers.YAMLPrinter{}
	default:
		return usagef("-o %q: use json or yaml", format)
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode the output: %w", err)
	}
	return p.PrintObj(&runtime.Unknown{Raw: raw, ContentType: runtime.ContentTypeJSON}, w)
}
