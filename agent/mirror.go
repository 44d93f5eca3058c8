package agent

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/detour-dev/detour/tunnel"
)

// Mirrors (tcp-mirror, http-mirror) take nothing: they get copies of a
// port's traffic while the app, or an intercept, answers. The answer never
// waits for a copy: copies are queued without blocking, in bounded queues,
// and what does not fit is dropped whole and counted (tunnel/spec.md).
//
// mirrortcp.go copies connections, mirrorhttp.go requests.

// Bounds of one mirror's copies (tunnel/spec.md documents them).
const (
	// mirrorConns bounds the connections one tcp-mirror copies at once.
	mirrorConns = 64
	// mirrorConnQueue bounds what one connection's copy may queue beyond
	// what its stream's window takes, and mirrorConnsQueue what all of
	// one tcp-mirror's copies may queue together.
	mirrorConnQueue  = 1 << 20
	mirrorConnsQueue = 8 << 20

	// mirrorRequests and mirrorQueueBytes bound one http-mirror's queue:
	// requests, and the bytes of their bodies.
	mirrorRequests   = 64
	mirrorQueueBytes = 8 << 20
	// mirrorSenders send one http-mirror's copies, each at most
	// mirrorCopyTimeout (its answer read and discarded).
	mirrorSenders = 4
)

// mirrorCopyTimeout bounds sending one http copy, and how long a
// connection's copy may take to catch up once the connection ended.
const mirrorCopyTimeout = 10 * time.Second

// Outcomes of a copy, as metric labels.
const (
	copyCopied     = "copied"
	copyQueueFull  = "queue_full" // http: the queue had no room
	copyBusy       = "busy"       // tcp: mirrorConns connections were being copied
	copyCut        = "cut"        // tcp: the copy fell behind and was cut off
	copyTooLarge   = "too_large"  // http: the body is longer than tunnel.MaxMirrorBody
	copyIncomplete = "incomplete" // http: the body was not read to its end
	copyUpgrade    = "upgrade"    // http: an upgrade (WebSocket) is no request to copy
	copyFailed     = "failed"     // the workstation did not take the copy
)

// mirror is one mirror's copying state: its counts, and what sends its
// copies (senders for http, one writer per connection for tcp).
type mirror struct {
	ic      *intercept
	log     *zap.Logger
	outcome *prometheus.CounterVec // by outcome, for ic's mechanism

	copied, dropped atomic.Uint64

	ctx    context.Context // ends when the mirror is released
	cancel context.CancelFunc
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup // senders and connection writers

	// tcp-mirror: the connections being copied.
	conns map[*connCopy]struct{}

	// http-mirror: copies waiting for a sender; queued is their bodies'
	// bytes (http-mirror) or what the connections' copies queue (tcp).
	queue  chan *requestCopy
	queued atomic.Int64
}

func (a *Agent) newMirror(ic *intercept) *mirror {
	ctx, cancel := context.WithCancel(context.Background())
	m := &mirror{
		ic: ic, log: a.log.With(zap.String("mirror", ic.name), zap.String("holder", ic.owner.user)),
		outcome: a.m.mirrorCopies.MustCurryWith(prometheus.Labels{"mechanism": ic.mechanism}),
		ctx:     ctx, cancel: cancel,
		conns: map[*connCopy]struct{}{},
	}
	if ic.mechanism == tunnel.MechanismHTTPMirror {
		m.queue = make(chan *requestCopy, mirrorRequests)
		m.wg.Add(mirrorSenders)
		for range mirrorSenders {
			go m.send()
		}
	}
	return m
}

// count records one copy's outcome.
func (m *mirror) count(outcome string) {
	if outcome == copyCopied {
		m.copied.Add(1)
	} else {
		m.dropped.Add(1)
	}
	m.outcome.WithLabelValues(outcome).Inc()
}

// track registers a goroutine of the mirror; false once it is released.
func (m *mirror) track() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.wg.Add(1)
	return true
}

// close stops every copy in flight and waits for the mirror's goroutines.
func (m *mirror) close() {
	m.mu.Lock()
	m.closed = true
	conns := make([]*connCopy, 0, len(m.conns))
	for cc := range m.conns {
		conns = append(conns, cc)
	}
	m.mu.Unlock()
	m.cancel()
	for _, cc := range conns {
		cc.abort()
	}
	m.wg.Wait()
}

// newMirrorIntercept checks a mirror's create request and prepares it.
func (a *Agent) newMirrorIntercept(o *owner, req tunnel.CreateIntercept) (*intercept, error) {
	var ic *intercept
	switch req.Mechanism {
	case tunnel.MechanismTCPMirror:
		if len(req.Args) > 0 {
			return nil, fmt.Errorf("intercept %q: the tcp-mirror mechanism takes no settings (got %s): use http-mirror to copy only some requests: %w", req.Name, argKeys(req.Args), tunnel.ErrBadRequest)
		}
		ic = &intercept{name: req.Name, port: req.Port, mechanism: req.Mechanism, owner: o}
	default:
		s, err := tunnel.ParseHTTPMirrorArgs(req.Args)
		if err != nil {
			return nil, fmt.Errorf("intercept %q: %w", req.Name, err)
		}
		if err := a.reg.serves(req.Port); err != nil {
			return nil, err // before probing a port that is not the app's
		}
		if ic, err = a.newHTTPIntercept(context.Background(), o, req, s); err != nil {
			return nil, err
		}
		ic.mechanism = req.Mechanism
	}
	ic.mirror = a.newMirror(ic)
	return ic, nil
}

// addMirror adds mirror ic to next: any number share a port. It replaces
// its client's mirror of the same name (a re-create, or a reconnect), and
// refuses an http-mirror on a port a tcp intercept takes raw.
func addMirror(next *portState, ic *intercept) (replaced []*intercept, err error) {
	if t := next.tcp; ic.mechanism == tunnel.MechanismHTTPMirror && t != nil && !replaces(ic, t) {
		return nil, fmt.Errorf("port %d is intercepted globally (tcp) by %s (intercept %q): its connections reach nobody's HTTP router, so no request can be copied; use --mirror with --mechanism tcp to copy the connections: %w",
			ic.port, t.owner.user, t.name, tunnel.ErrAlreadyIntercepted)
	}
	if t := next.tcp; t != nil && replaces(ic, t) {
		replaced, next.tcp = append(replaced, t), nil
	}
	list := &next.tcpMirrors
	if ic.mechanism == tunnel.MechanismHTTPMirror {
		list = &next.httpMirrors
	}
	for _, l := range []*[]*intercept{&next.tcpMirrors, &next.httpMirrors} {
		*l = slices.DeleteFunc(*l, func(x *intercept) bool {
			if replaces(ic, x) {
				replaced = append(replaced, x)
				return true
			}
			return false
		})
	}
	*list = append(*list, ic)
	return replaced, nil
}

// tcpBlindsMirrors refuses a tcp intercept on a port with http-mirrors
// (other than ic's own of the same name, which it replaces): it would take
// the connections raw, and the mirrors would see no request.
func tcpBlindsMirrors(held *portState, ic *intercept) error {
	if held == nil {
		return nil
	}
	var blinded []*intercept
	for _, m := range held.httpMirrors {
		if !replaces(ic, m) {
			blinded = append(blinded, m)
		}
	}
	if len(blinded) == 0 {
		return nil
	}
	return fmt.Errorf("port %d has http-mirrors by %s: a global tcp intercept would take the connections raw and they would see no request; use --mechanism http with your own header, or ask them to leave: %w",
		ic.port, holders(blinded), tunnel.ErrAlreadyIntercepted)
}

// replaces says whether ic takes the place of x: the same name, from the
// same client (this session, or an earlier one of the same secret).
func replaces(ic, x *intercept) bool {
	return x.name == ic.name && (x.owner == ic.owner || x.owner.sameClient(ic.owner))
}
