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
type SessionLink struct {
	connect func(ctx context.Context) (*client.Session, error)

	mu     sync.Mutex
	sess   *client.Session
	closed bool
}

// NewSessionLink opens sessions with connect.
func NewSessionLink(connect func(ctx context.Context) (*client.Session, error)) *SessionLink {
	return &SessionLink{connect: connect}
}

func (l *SessionLink) session(ctx context.Context) (*client.Session, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, tunnel.ErrSessionClosed
	}
	if l.sess != nil {
		select {
		case <-l.sess.Done():
			l.sess = nil
		default:
			return l.sess, nil
		}
	}
	s, err := l.connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("reach the agent: %w", err)
	}
	l.sess = s
	return s, nil
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
