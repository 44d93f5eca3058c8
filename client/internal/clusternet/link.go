package clusternet

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/tunnel"
)

// SessionLink is a Link over one agent session that it re-opens, on the
// next dial, once the session is lost (the agent restarted, the
// port-forward dropped): connections open then fail, new ones work.
// Re-opening is single-flight: every dial that finds the session gone
// waits for the same attempt (or its own context), never in a queue of
// attempts one after another.
type SessionLink struct {
	connect func(ctx context.Context) (*client.Session, error)

	mu      sync.Mutex
	sess    *client.Session
	pending *attempt // the connect in progress, if any
	closed  bool
}

// attempt is one connect; done is closed when sess or err is set.
type attempt struct {
	done chan struct{}
	sess *client.Session
	err  error
}

// NewSessionLink opens sessions with connect (which bounds its own time).
func NewSessionLink(connect func(ctx context.Context) (*client.Session, error)) *SessionLink {
	return &SessionLink{connect: connect}
}

func (l *SessionLink) session(ctx context.Context) (*client.Session, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, tunnel.ErrSessionClosed
	}
	if l.sess != nil {
		select {
		case <-l.sess.Done():
			l.sess = nil
		default:
			s := l.sess
			l.mu.Unlock()
			return s, nil
		}
	}
	a := l.pending
	if a == nil {
		a = &attempt{done: make(chan struct{})}
		l.pending = a
		go l.run(a)
	}
	l.mu.Unlock()
	select {
	case <-a.done:
		if a.err != nil {
			return nil, fmt.Errorf("reach the agent: %w", a.err)
		}
		return a.sess, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("reach the agent: %w", ctx.Err())
	}
}

// run makes one connect attempt for every waiter.
func (l *SessionLink) run(a *attempt) {
	s, err := l.connect(context.Background())
	l.mu.Lock()
	l.pending = nil
	if err == nil && l.closed {
		_ = s.Close()
		s, err = nil, tunnel.ErrSessionClosed
	}
	if err == nil {
		l.sess = s
	}
	a.sess, a.err = s, err
	l.mu.Unlock()
	close(a.done)
}

// Dial opens a dial stream (Link).
func (l *SessionLink) Dial(ctx context.Context, network string, dst netip.AddrPort) (net.Conn, error) {
	s, err := l.session(ctx)
	if err != nil {
		return nil, err
	}
	return s.Dial(ctx, network, dst)
}

// DNS opens a DNS stream (Link).
func (l *SessionLink) DNS(ctx context.Context) (net.Conn, error) {
	s, err := l.session(ctx)
	if err != nil {
		return nil, err
	}
	return s.DNS(ctx)
}

// Network asks the agent for the pod's network.
func (l *SessionLink) Network(ctx context.Context) (tunnel.Network, error) {
	s, err := l.session(ctx)
	if err != nil {
		return tunnel.Network{}, err
	}
	return s.Network(ctx)
}

// Environment asks the agent for the app container's environment.
func (l *SessionLink) Environment(ctx context.Context) (map[string]string, error) {
	s, err := l.session(ctx)
	if err != nil {
		return nil, err
	}
	return s.Environment(ctx)
}

// Close ends the session; the link opens no other.
func (l *SessionLink) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.sess != nil {
		_ = l.sess.Close()
		l.sess = nil
	}
}
