package agent

import (
	"testing"
	"time"

	"github.com/detour-dev/detour/internal/annotations"
)

// TestIdleReport pins when an agent asks to be removed: never with max
// idle off, never while busy, and from exactly maxIdle after it was last
// busy.
func TestIdleReport(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name    string
		now     time.Time
		busy    bool
		maxIdle time.Duration
		want    annotations.IdleReport
	}{
		{"off: idle for an hour, no request", t0.Add(time.Hour), false, 0,
			annotations.IdleReport{IdleSeconds: 3600}},
		{"busy: a session or an intercept", t0.Add(time.Hour), true, 20 * time.Second,
			annotations.IdleReport{MaxIdleSeconds: 20}},
		{"idle, not yet long enough", t0.Add(19 * time.Second), false, 20 * time.Second,
			annotations.IdleReport{MaxIdleSeconds: 20, IdleSeconds: 19}},
		{"idle for exactly max idle", t0.Add(20 * time.Second), false, 20 * time.Second,
			annotations.IdleReport{MaxIdleSeconds: 20, IdleSeconds: 20, Remove: true}},
		{"idle for longer", t0.Add(time.Hour), false, 20 * time.Second,
			annotations.IdleReport{MaxIdleSeconds: 20, IdleSeconds: 3600, Remove: true}},
		{"a clock behind the last touch counts as no idle time", t0.Add(-time.Second), false, 20 * time.Second,
			annotations.IdleReport{MaxIdleSeconds: 20}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := idleReport(c.now, t0, c.busy, c.maxIdle); got != c.want {
				t.Fatalf("idleReport = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestIdleClockKeepsTheLatestTouch(t *testing.T) {
	var c idleClock
	t0 := time.Now()
	c.touch(t0)
	c.touch(t0.Add(-time.Minute)) // a late caller with an older time
	if got := c.since(); !got.Equal(t0) {
		t.Fatalf("since = %v, want %v", got, t0)
	}
}
