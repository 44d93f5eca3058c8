package tunnel

import (
	"fmt"
	"testing"

	"github.com/detour-dev/detour/internal/docsync"
)

// TestDocsQuoteTheWireValues: spec.md and docs/architecture.md state the
// protocol's version, frame values, bounds and timing as the code has them.
func TestDocsQuoteTheWireValues(t *testing.T) {
	spec := []string{
		fmt.Sprintf("# detour tunnel protocol, version %d", ProtocolVersion),
		fmt.Sprintf("| keep-alive | every %s, both sides |", docsync.Dur(DefaultKeepAliveInterval)),
		fmt.Sprintf("(≤ %s)", docsync.Dur(DefaultKeepAliveInterval+DefaultWriteTimeout)),
		fmt.Sprintf("| write timeout | %s |", docsync.Dur(DefaultWriteTimeout)),
		fmt.Sprintf("| stream window | %s |", docsync.Size(DefaultStreamWindow)),
		fmt.Sprintf("`MaxControlPayload` (%s)", docsync.Size(MaxControlPayload)),
		fmt.Sprintf("`MaxStreamHeader` (%s)", docsync.Size(MaxStreamHeader)),
		fmt.Sprintf("`MaxDialReason` (%s)", docsync.Size(MaxDialReason)),
		fmt.Sprintf("`MaxDatagram`, %d,%03d", MaxDatagram/1000, MaxDatagram%1000),
		fmt.Sprintf("`clientId` and `user` are 1–%d bytes", MaxNameLen),
		fmt.Sprintf("**Intercept names** are 1–%d", MaxNameLen),
		fmt.Sprintf("1 × RE2 syntax (Go's `regexp`), ≤ %d bytes", MaxPathRule),
	}
	for ft := FrameHello; ft.valid(); ft++ {
		spec = append(spec, fmt.Sprintf("| %s | 0x%02X |", ft, uint8(ft)))
	}
	for _, k := range []struct {
		name string
		kind StreamKind
	}{{"intercepted", StreamIntercepted}, {"dial-pod", StreamDialPod}, {"dial", StreamDial}, {"dns", StreamDNS}} {
		spec = append(spec, fmt.Sprintf("| %s | 0x%02X |", k.name, uint8(k.kind)))
	}
	for c := CodeBadRequest; c <= lastCode; c++ {
		spec = append(spec, fmt.Sprintf("| %d | ", c))
	}
	docsync.Check(t, "tunnel/spec.md", spec...)
	docsync.Check(t, "docs/architecture.md",
		fmt.Sprintf("**Keep-alive %s, write timeout %s**", docsync.Dur(DefaultKeepAliveInterval), docsync.Dur(DefaultWriteTimeout)),
		fmt.Sprintf("within about %s", docsync.Dur(DefaultKeepAliveInterval+DefaultWriteTimeout)),
	)
}
