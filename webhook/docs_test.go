package webhook

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/internal/docsync"
)

// TestDocsQuoteTheWebhooksValues: docs/architecture.md names the ports the
// webhook picks, the idle reaper's interval bounds and every webhook metric
// as the code has them.
func TestDocsQuoteTheWebhooksValues(t *testing.T) {
	floor, ceiling := ReapInterval(0), ReapInterval(24*time.Hour)
	if ReapInterval(4*time.Minute) != time.Minute || ceiling != time.Minute {
		t.Errorf("docs/architecture.md says the reaper asks every quarter of max idle, at most a minute")
	}
	phrases := []string{
		fmt.Sprintf("the agent listens from %d up", annotations.FirstListenPort),
		fmt.Sprintf("a probe port (%d up, free in the pod)", firstProbePort),
		fmt.Sprintf("listens on a probe port (%d up)", firstProbePort),
		fmt.Sprintf("(`--probe-ports %d:8080`)", firstProbePort),
		fmt.Sprintf("between %s and a minute (`ReapInterval`)", docsync.Dur(floor)),
		fmt.Sprintf("health port (%d)", annotations.HealthPort),
		fmt.Sprintf("`%s`", annotations.IdlePath),
		fmt.Sprintf("`%s=%s`", annotations.IdleLabel, annotations.IdleLabelValue),
	}
	m := NewMetrics()
	m.IdleRemoved(WorkloadRef{Kind: KindDeployment})
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), "detour_webhook_") {
			phrases = append(phrases, "`"+f.GetName())
		}
	}
	if len(phrases) < 12 {
		t.Fatalf("found too few webhook metrics: %v", phrases)
	}
	docsync.Check(t, "docs/architecture.md", phrases...)
}
