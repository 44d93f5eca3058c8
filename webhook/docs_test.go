package webhook

import (
	"fmt"
	"testing"

	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/internal/docsync"
)

// TestDocsQuoteTheWebhooksPorts: docs/architecture.md names the ports the
// webhook picks as the code does.
func TestDocsQuoteTheWebhooksPorts(t *testing.T) {
	docsync.Check(t, "docs/architecture.md",
		fmt.Sprintf("the agent listens from %d up", annotations.FirstListenPort),
		fmt.Sprintf("a probe port (%d up, free in the pod)", firstProbePort),
		fmt.Sprintf("listens on a probe port (%d up)", firstProbePort),
		fmt.Sprintf("(`--probe-ports %d:8080`)", firstProbePort),
	)
}
