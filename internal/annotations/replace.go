package annotations

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Replace mode (`detour intercept --replace`). The client sets Replace on
// the workload's pod template, which rolls it; the webhook then injects the
// agent as usual and also stops the app container's own work: its command
// becomes the agent binary's `sleep` (copied in by ReplaceInitName), its
// probes and lifecycle hooks go, and the pod gets ReplacedLabel. Restoring
// is removing Replace (another roll): the client does it on leave and on
// `detour quit`; when the workstation disappears, each agent reports on
// ReplacePath that it has held no intercept for the grace period, and the
// webhook's restorer removes the annotation once every agent of the
// workload says so.
const (
	// Replace is the pod template annotation; its value is a ReplaceSpec.
	Replace = "detour.dev/replace"

	// ReplacedLabel marks a pod whose app container was replaced: the label
	// selector of the webhook's restorer.
	ReplacedLabel      = "detour.dev/replaced"
	ReplacedLabelValue = "true"

	// ReplacePath is where a replaced pod's agent serves its ReplaceReport.
	ReplacePath = "/replace"

	// ReplaceInitName is the init container that copies the agent binary
	// into ReplaceVolume, from which the app container runs it as its
	// sleeper; ReplaceMountPath is where both mount the volume.
	ReplaceInitName  = "detour-replace"
	ReplaceVolume    = "detour-replace"
	ReplaceMountPath = "/var/run/detour/replace"
	// Sleeper is the app container's command while replaced.
	Sleeper = ReplaceMountPath + "/detour-agent"
	// SleepCommand is the agent command the sleeper runs.
	SleepCommand = "sleep"

	// DefaultReplaceGrace is how long replaced pods stay replaced once no
	// intercept holds them (the workstation went away).
	DefaultReplaceGrace = time.Minute
	// ReplaceStartAllowance is how long a replaced agent waits for its
	// first intercept before the grace period starts counting: a rollout
	// of several pods can take a while before the client connects to all.
	ReplaceStartAllowance = 5 * time.Minute
)

// ReplaceSpec is the value of the Replace annotation.
type ReplaceSpec struct {
	// By names who replaced the workload (user@host), for `kubectl
	// describe` and for the messages of whoever finds it replaced.
	By string `json:"by"`
	// Grace is how long the pods stay replaced after their last intercept
	// went away without a leave (a Go duration).
	Grace string `json:"grace"`
}

// ErrBadReplace means a Replace annotation could not be read.
var ErrBadReplace = errors.New("malformed " + Replace + " annotation")

// Encode renders s as the annotation's value.
func (s ReplaceSpec) Encode() string {
	b, err := json.Marshal(s)
	if err != nil { // two strings always marshal
		panic(fmt.Sprintf("marshal replace spec: %v", err))
	}
	return string(b)
}

// GraceDuration is Grace parsed; ParseReplace has checked it.
func (s ReplaceSpec) GraceDuration() time.Duration {
	d, _ := time.ParseDuration(s.Grace)
	return d
}

// ParseReplace reads a Replace annotation's value.
func ParseReplace(v string) (ReplaceSpec, error) {
	var s ReplaceSpec
	if err := json.Unmarshal([]byte(v), &s); err != nil {
		return ReplaceSpec{}, fmt.Errorf("%w: %w", ErrBadReplace, err)
	}
	if strings.TrimSpace(s.By) == "" {
		return ReplaceSpec{}, fmt.Errorf("%w: no \"by\"", ErrBadReplace)
	}
	d, err := time.ParseDuration(s.Grace)
	if err != nil || d <= 0 {
		return ReplaceSpec{}, fmt.Errorf("%w: grace %q: want a positive duration such as 1m", ErrBadReplace, s.Grace)
	}
	return s, nil
}

// ReplaceReport is a replaced pod's agent's answer on ReplacePath.
type ReplaceReport struct {
	// Held: the agent holds at least one intercept now.
	Held bool `json:"held"`
	// UnheldSeconds is how long it has held none (0 while Held).
	UnheldSeconds float64 `json:"unheldSeconds"`
	// GraceSeconds is the grace period it applies now: the spec's grace
	// once it has held an intercept, at least ReplaceStartAllowance before.
	GraceSeconds float64 `json:"graceSeconds"`
	// Restore: unheld for the grace period; the agent asks for the app back.
	Restore bool `json:"restore"`
}
