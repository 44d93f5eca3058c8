package agent

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/detour-dev/detour/internal/annotations"
)

// idleClock remembers when the agent last had a session: a session's
// start and end touch it. The agent is busy while it has a session or an
// intercept (an intercept needs a session, but the registry is asked too).
type idleClock struct {
	mu       sync.Mutex
	lastBusy time.Time
}

func (c *idleClock) touch(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.After(c.lastBusy) {
		c.lastBusy = now
	}
}

func (c *idleClock) since() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastBusy
}

// idleReport decides whether the agent asks to be removed: only with a
// positive maxIdle, only while it has no session and no intercept, and
// only once it has had none for maxIdle since lastBusy (its start, or its
// last session's end).
func idleReport(now, lastBusy time.Time, busy bool, maxIdle time.Duration) annotations.IdleReport {
	r := annotations.IdleReport{MaxIdleSeconds: maxIdle.Seconds()}
	if busy {
		return r
	}
	idle := max(now.Sub(lastBusy), 0)
	r.IdleSeconds = idle.Seconds()
	r.Remove = maxIdle > 0 && idle >= maxIdle
	return r
}

// idleNow is the agent's IdleReport at this moment.
func (a *Agent) idleNow() annotations.IdleReport {
	busy := a.sessions.len() > 0 || len(a.reg.count()) > 0
	return idleReport(time.Now(), a.idle.since(), busy, a.cfg.MaxIdle)
}

// serveIdle answers annotations.IdlePath on the health port: the webhook's
// idle reaper reads it (docs/architecture.md, "Idle agents").
func (a *Agent) serveIdle(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(a.idleNow())
}
