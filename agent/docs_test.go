package agent

import (
	"fmt"
	"net/http"
	"regexp"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/internal/docsync"
	"github.com/detour-dev/detour/tunnel"
)

// TestDocsQuoteTheAgentsValues: what docs/architecture.md says of the
// agent's defaults and bounds is what the code holds.
func TestDocsQuoteTheAgentsValues(t *testing.T) {
	cfg := DefaultConfig()
	proxy := newBackend(httpProtocol{}, nil, nil, zap.NewNop(), func(http.ResponseWriter, *http.Request, error) {}).proxy
	docsync.Check(t, "docs/architecture.md",
		fmt.Sprintf("Stream window %s on the client, %s on the agent", docsync.Size(tunnel.DefaultStreamWindow), docsync.Size(AgentStreamWindow)),
		fmt.Sprintf("hello (%s deadline", docsync.Dur(cfg.HelloTimeout)),
		fmt.Sprintf("Once no connection has been open for %s, or `--shutdown-grace` (default %s)", docsync.Dur(drainQuiet), docsync.Dur(cfg.ShutdownGrace)),
		fmt.Sprintf("(checked at most every %s)", docsync.Dur(recheckEvery)),
		fmt.Sprintf("gets a %d-hour, HttpOnly, SameSite=Lax cookie", previewCookieAge/3600),
		fmt.Sprintf("`FlushInterval: %d`", proxy.FlushInterval),
		fmt.Sprintf("`--health-addr` (%s)", cfg.HealthAddr),
		fmt.Sprintf("`--metrics-addr` (%s)", cfg.MetricsAddr),
		fmt.Sprintf("`--redirect-addr :%d`", annotations.RedirectPort),
		fmt.Sprintf("redirect to :%d", annotations.RedirectPort),
		fmt.Sprintf("(e.g. %d)", annotations.FirstListenPort),
		fmt.Sprintf("stream windows it advertises (%s, as", docsync.Size(h2StreamWindow)),
		fmt.Sprintf("On a connection (%s window)", docsync.Size(h2ConnWindow)),
		fmt.Sprintf("up to %s per connection and %s for the whole agent", docsync.Size(h2PeerLend), docsync.Size(h2AgentLend)),
		fmt.Sprintf("once a caller's streams that stopped reading hold more than %s (%d streams), or all relays together %s",
			docsync.Size(h2PeerLend), h2PeerLend/h2StreamWindow+1, docsync.Size(h2AgentLend)),
		fmt.Sprintf("at most %s)", docsync.Size(h2AgentLend)),
	)
	docsync.Check(t, "tunnel/spec.md",
		fmt.Sprintf("within %s of the session opening", docsync.Dur(cfg.HelloTimeout)),
		fmt.Sprintf("the agent's dial timeout, %s", docsync.Dur(cfg.DialTimeout)),
	)
}

// TestDocsListEveryAgentMetric: the Observability section of
// docs/architecture.md names every metric the agent registers.
func TestDocsListEveryAgentMetric(t *testing.T) {
	var reg describing
	newMetrics(&reg, newH2LendPool(0))
	if len(reg.names) < 10 {
		t.Fatalf("found %d metric names (%v): the capture is broken", len(reg.names), reg.names)
	}
	var phrases []string
	for _, n := range reg.names {
		phrases = append(phrases, "`"+n)
	}
	docsync.Check(t, "docs/architecture.md", phrases...)
}

// describing is a prometheus.Registerer that keeps the names of what is
// registered.
type describing struct{ names []string }

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (d *describing) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		if m := fqName.FindStringSubmatch(desc.String()); m != nil {
			d.names = append(d.names, m[1])
		}
	}
	return nil
}

func (d *describing) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = d.Register(c)
	}
}

func (d *describing) Unregister(prometheus.Collector) bool { return false }
