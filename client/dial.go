package client

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/detour-dev/detour/tunnel"
)

// Network returns the pod's network as the agent reports it: its IP, its
// resolv.conf, the cluster ranges and the destinations its owner allows.
func (s *Session) Network(ctx context.Context) (tunnel.Network, error) {
	var n tunnel.Network
	if err := s.request(ctx, tunnel.FrameGetNetwork, tunnel.GetNetwork{}, tunnel.FrameNetwork, &n); err != nil {
		return tunnel.Network{}, fmt.Errorf("get the pod's network: %w", err)
	}
	return n, nil
}

// Dial opens a TCP connection, or a UDP association, to dst from the
// pod's network namespace: the agent dials it, so the destination sees the
// pod. The error matches tunnel.ErrDialDenied (the egress rules refuse
// dst; the message names the rule), tunnel.ErrDialRefused or
// tunnel.ErrDialUnreachable.
//
// A TCP connection is the returned stream's bytes. A UDP association
// carries one datagram per tunnel.WriteMessage / tunnel.ReadMessage.
func (s *Session) Dial(ctx context.Context, network string, dst netip.AddrPort) (net.Conn, error) {
	return s.dial(ctx, network, dst, nil)
}

// dial opens a dial stream; early, when given, goes out with its header,
// before the agent's answer (tunnel/spec.md, dial: the agent reads exactly
// the header and passes what follows on once it has dialled), which saves
// a round trip to a caller who knows what it will send first.
func (s *Session) dial(ctx context.Context, network string, dst netip.AddrPort, early []byte) (net.Conn, error) {
	st, err := s.sess.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("dial %s %s through the pod: %w", network, dst, s.sessionErr(err))
	}
	stop := context.AfterFunc(ctx, func() { _ = st.SetReadDeadline(time.Now()) })
	defer func() {
		if !stop() {
			_ = st.SetReadDeadline(time.Time{})
		}
	}()
	// Header and early bytes in one write: one frame, one message.
	var first bytes.Buffer
	if err := tunnel.WriteStreamHeader(&first, tunnel.StreamDial, tunnel.DialHeader{Network: network, Address: dst.String()}); err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("dial %s %s through the pod: %w", network, dst, err)
	}
	first.Write(early)
	if _, err := st.Write(first.Bytes()); err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("dial %s %s through the pod: %w", network, dst, s.sessionErr(err))
	}
	if err := tunnel.ReadDialResult(st); err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("dial %s %s through the pod: %w", network, dst, err)
	}
	return st, nil
}

// DNS opens a stream on which DNS messages (each with DNS over TCP's u16
// length prefix, tunnel.WriteMessage) are answered in order by the pod's
// nameservers.
func (s *Session) DNS(ctx context.Context) (net.Conn, error) {
	st, err := s.sess.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("open a DNS stream: %w", s.sessionErr(err))
	}
	if err := tunnel.WriteStreamHeader(st, tunnel.StreamDNS, struct{}{}); err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("open a DNS stream: %w", s.sessionErr(err))
	}
	return st, nil
}
