package daemon

import (
	"fmt"
	"testing"
	"time"

	"github.com/detour-dev/detour/internal/docsync"
	"github.com/detour-dev/detour/tunnel"
)

// TestDocsQuoteTheRunnersTiming: docs/architecture.md's account of the
// runner (re-list, reconnect backoff, sleep detection, holder check) has
// the code's values.
func TestDocsQuoteTheRunnersTiming(t *testing.T) {
	if silenceTick != time.Second {
		t.Errorf("docs/architecture.md says the wall clock is checked every second; silenceTick is %s", silenceTick)
	}
	docsync.Check(t, "docs/architecture.md",
		fmt.Sprintf("(plus a %s re-list in case a watch stalls)", docsync.Dur(resyncInterval)),
		fmt.Sprintf("watch pods + %s resync", docsync.Dur(resyncInterval)),
		fmt.Sprintf("reconnects with backoff (%s doubling to %s)", docsync.Dur(firstBackoff), docsync.Dur(maxBackoff)),
		"checks the wall clock every second",
		fmt.Sprintf("right after a tick came more than %s late", docsync.Dur(silenceGap)),
		fmt.Sprintf("(their keep-alive bound, %s + %s by default", docsync.Dur(tunnel.DefaultKeepAliveInterval), docsync.Dur(tunnel.DefaultWriteTimeout)),
		fmt.Sprintf("Every %s an active session checks", docsync.Dur(holderCheck)),
		fmt.Sprintf("keeps each pod's session open for %s", docsync.Dur(DefaultSessionLinger)),
		fmt.Sprintf("One that does not answer within %s", docsync.Dur(spareCheck)),
		fmt.Sprintf("for up to %s after a leave", docsync.Dur(DefaultSessionLinger)),
	)
}
