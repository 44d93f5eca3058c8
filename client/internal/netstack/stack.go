//go:build linux

package netstack

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	"go.uber.org/zap"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/detour-dev/detour/tunnel"
)

const nicID tcpip.NICID = 1

// Stack is a running userspace TCP/IP stack on a TUN fd.
type Stack struct {
	s   *stack.Stack
	ep  stack.LinkEndpoint
	cfg Config

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New starts a stack on cfg.FD. Close stops it.
func New(cfg Config) (*Stack, error) {
	if cfg.MTU == 0 {
		cfg.MTU = 65520
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = 1024
	}
	ep, err := fdbased.New(&fdbased.Options{FDs: []int{cfg.FD}, MTU: cfg.MTU, RXChecksumOffload: true})
	if err != nil {
		return nil, fmt.Errorf("netstack: link endpoint on fd %d: %w", cfg.FD, err)
	}
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	ctx, cancel := context.WithCancel(context.Background())
	st := &Stack{s: s, ep: ep, cfg: cfg, ctx: ctx, cancel: cancel}
	if err := st.configure(); err != nil {
		cancel()
		s.Close()
		return nil, err
	}
	return st, nil
}

func (st *Stack) configure() error {
	s := st.s
	sack := tcpip.TCPSACKEnabled(true)
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		return fmt.Errorf("netstack: SACK: %s", err)
	}
	// Windows large enough that one connection can fill the tunnel
	// (the tunnel's own stream window is 4 MiB); moderation grows them.
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 8 << 20}
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 8 << 20}
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &rcv); err != nil {
		return fmt.Errorf("netstack: receive buffer: %s", err)
	}
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &snd); err != nil {
		return fmt.Errorf("netstack: send buffer: %s", err)
	}
	tcpFwd := tcp.NewForwarder(s, 0, st.cfg.MaxInFlight, st.handleTCP)
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, tcpFwd.HandlePacket)
	udpFwd := udp.NewForwarder(s, st.handleUDP)
	s.SetTransportProtocolHandler(udp.ProtocolNumber, udpFwd.HandlePacket)
	if err := s.CreateNICWithOptions(nicID, st.ep, stack.NICOptions{Disabled: true}); err != nil {
		return fmt.Errorf("netstack: NIC: %s", err)
	}
	// Any destination is ours: accept packets for every address
	// (promiscuous) and answer from every address (spoofing).
	if err := s.SetPromiscuousMode(nicID, true); err != nil {
		return fmt.Errorf("netstack: promiscuous: %s", err)
	}
	if err := s.SetSpoofing(nicID, true); err != nil {
		return fmt.Errorf("netstack: spoofing: %s", err)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: nicID}, {Destination: header.IPv6EmptySubnet, NIC: nicID}})
	// Only now, with everything set, does the link start reading the
	// fd: packets never meet a half-configured stack (the race detector
	// saw the dispatcher read the handlers while they were being set).
	if err := s.EnableNIC(nicID); err != nil {
		return fmt.Errorf("netstack: enable NIC: %s", err)
	}
	return nil
}

// Close stops the stack and waits for the connections it handed out.
func (st *Stack) Close() {
	st.cancel()
	// Removing the NIC stops the link's dispatch loop (closing the stack
	// alone leaves it reading the fd).
	_ = st.s.RemoveNIC(nicID)
	st.s.Close()
	st.s.Wait()
	st.wg.Wait()
}

// handleTCP runs in its own goroutine per SYN (gVisor's forwarder starts it).
func (st *Stack) handleTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	dst := netip.AddrPortFrom(toAddr(id.LocalAddress), id.LocalPort)
	far, err := st.cfg.Handler.DialTCP(st.ctx, dst)
	if err != nil {
		r.Complete(true)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		r.Complete(true)
		_ = far.Close()
		st.cfg.Log.Debug("netstack: handshake failed", zap.Stringer("destination", dst), zap.String("error", terr.String()))
		return
	}
	r.Complete(false)
	ep.SocketOptions().SetKeepAlive(true)
	near := gonet.NewTCPConn(&wq, ep)
	st.wg.Add(1)
	defer st.wg.Done()
	tunnel.Join(near, far)
}

// handleUDP is called synchronously for the first datagram of a flow.
func (st *Stack) handleUDP(r *udp.ForwarderRequest) bool {
	id := r.ID()
	dst := netip.AddrPortFrom(toAddr(id.LocalAddress), id.LocalPort)
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		st.cfg.Log.Debug("netstack: udp endpoint", zap.Stringer("destination", dst), zap.String("error", terr.String()))
		return false
	}
	conn := gonet.NewUDPConn(&wq, ep)
	st.wg.Add(1)
	go func() {
		defer st.wg.Done()
		st.cfg.Handler.ServeUDP(conn, dst)
	}()
	return true
}

func toAddr(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip.Unmap()
}
