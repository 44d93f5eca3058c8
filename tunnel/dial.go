package tunnel

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// Network types of a StreamDial stream.
const (
	NetworkTCP = "tcp"
	NetworkUDP = "udp"
)

// DialHeader opens a client → agent StreamDial stream: the agent dials
// Address from the pod's own network namespace, so the destination (and any
// NetworkPolicy, mesh or egress rule on the way) sees the workload.
// Address is an IP literal and a port: the client resolves names first
// (through StreamDNS when they are the cluster's).
type DialHeader struct {
	Network string `json:"network"` // tcp or udp
	Address string `json:"address"` // ip:port
}

// Validate checks a dial header and returns the destination.
func (h DialHeader) Validate() (netip.AddrPort, error) {
	if h.Network != NetworkTCP && h.Network != NetworkUDP {
		return netip.AddrPort{}, fmt.Errorf("dial stream: network %q (want tcp or udp): %w", h.Network, ErrBadRequest)
	}
	ap, err := netip.ParseAddrPort(h.Address)
	if err != nil || ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("dial stream: address %q is not ip:port: %w", h.Address, ErrBadRequest)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// GetNetwork asks for what the client needs to give a local process the
// pod's view of the cluster.
type GetNetwork struct{}

// Network describes the pod's network as its agent sees it.
type Network struct {
	PodIP string `json:"podIP,omitempty"`
	// DNS is the pod's /etc/resolv.conf: the nameservers StreamDNS
	// queries go to, and the search path and ndots a local resolver
	// must apply so names resolve exactly as inside the pod.
	DNS ResolvConf `json:"dns"`
	// ClusterCIDRs are the pod and Service ranges the agent knows of;
	// StreamDial reaches them by default.
	ClusterCIDRs []string `json:"clusterCIDRs,omitempty"`
	// EgressAllow are further destinations the workload's owner allows
	// (annotation detour.dev/egress-allow); "*" allows any address that
	// is not always denied.
	EgressAllow []string `json:"egressAllow,omitempty"`
}

// ResolvConf is the part of a resolv.conf that name resolution depends on.
type ResolvConf struct {
	Nameservers []string `json:"nameservers"`
	Search      []string `json:"search,omitempty"`
	Ndots       int      `json:"ndots"`
}

// WriteDialResult answers a dial stream: one status byte and, for anything
// but DialOK, a u16-prefixed reason (at most MaxDialReason bytes).
func WriteDialResult(w io.Writer, status uint8, reason string) error {
	if status == DialOK {
		_, err := w.Write([]byte{DialOK})
		return err
	}
	if len(reason) > MaxDialReason {
		reason = reason[:MaxDialReason]
	}
	buf := make([]byte, 3+len(reason))
	buf[0] = status
	binary.BigEndian.PutUint16(buf[1:3], uint16(len(reason)))
	copy(buf[3:], reason)
	_, err := w.Write(buf)
	return err
}

// ReadDialResult reads the agent's answer to a dial stream: nil for
// DialOK, else an error that matches ErrDialRefused, ErrDialDenied or
// ErrDialUnreachable and carries the agent's reason.
func ReadDialResult(r io.Reader) error {
	var st [1]byte
	if _, err := io.ReadFull(r, st[:]); err != nil {
		return fmt.Errorf("read dial result: %w", noEOF(err))
	}
	if st[0] == DialOK {
		return nil
	}
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return fmt.Errorf("read dial result: %w", noEOF(err))
	}
	l := binary.BigEndian.Uint16(n[:])
	if l > MaxDialReason {
		return fmt.Errorf("dial reason of %d bytes (limit %d): %w", l, MaxDialReason, ErrFrameTooLarge)
	}
	reason := make([]byte, l)
	if _, err := io.ReadFull(r, reason); err != nil {
		return fmt.Errorf("read dial result: %w", noEOF(err))
	}
	var sentinel error
	switch st[0] {
	case DialRefused:
		sentinel = ErrDialRefused
	case DialDenied:
		sentinel = ErrDialDenied
	case DialUnreachable:
		sentinel = ErrDialUnreachable
	default:
		return fmt.Errorf("dial result 0x%02x: %w", st[0], ErrBadRequest)
	}
	msg := strings.ToValidUTF8(string(reason), "?")
	if msg == "" {
		return sentinel
	}
	return fmt.Errorf("%s: %w", msg, sentinel)
}

// WriteMessage writes one length-prefixed message: a UDP datagram on a
// StreamDial udp stream, or a DNS message on a StreamDNS stream (the same
// u16 prefix DNS over TCP uses). The prefix and body go in one Write.
func WriteMessage(w io.Writer, p []byte) error {
	if len(p) > MaxDatagram {
		return fmt.Errorf("message of %d bytes (limit %d): %w", len(p), MaxDatagram, ErrFrameTooLarge)
	}
	buf := make([]byte, 2+len(p))
	binary.BigEndian.PutUint16(buf, uint16(len(p)))
	copy(buf[2:], p)
	_, err := w.Write(buf)
	return err
}

// ReadMessage reads one length-prefixed message into buf (which should hold
// MaxDatagram bytes) and returns it. A message longer than buf is an error.
func ReadMessage(r io.Reader, buf []byte) ([]byte, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err // io.EOF between messages is a clean end
	}
	l := int(binary.BigEndian.Uint16(n[:]))
	if l > len(buf) {
		return nil, fmt.Errorf("message of %d bytes (buffer %d): %w", l, len(buf), ErrFrameTooLarge)
	}
	if _, err := io.ReadFull(r, buf[:l]); err != nil {
		return nil, fmt.Errorf("read message: %w", noEOF(err))
	}
	return buf[:l], nil
}
