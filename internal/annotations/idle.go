package annotations

// Idle agents (opt-in: the webhook's --agent-max-idle). The webhook passes
// the threshold to the agents it injects and labels their pods; each agent
// answers IdlePath on its health port with an IdleReport; the webhook's
// idle reaper reads the labelled pods' reports and, once every agent of a
// workload asks to be removed, drops Inject from the workload's pod
// template, which rolls it without the agent.
const (
	// IdleLabel marks a pod whose agent may ask to be removed: the label
	// selector of the reaper's pod informer.
	IdleLabel      = "detour.dev/idle-reap"
	IdleLabelValue = "enabled"

	// IdlePath is where an agent's health port serves its IdleReport.
	IdlePath = "/idle"
)

// IdleReport is an agent's answer on IdlePath.
type IdleReport struct {
	// MaxIdleSeconds is the agent's --max-idle, 0 when off.
	MaxIdleSeconds float64 `json:"maxIdleSeconds"`
	// IdleSeconds is how long the agent has had no session and no
	// intercept, 0 while it has one.
	IdleSeconds float64 `json:"idleSeconds"`
	// Remove: the agent has been idle for MaxIdleSeconds and asks to be
	// removed.
	Remove bool `json:"remove"`
}
