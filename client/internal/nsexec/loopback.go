//go:build linux

package nsexec

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/detour-dev/detour/tunnel"
)

// The workstation's loopback, for ports nothing in the namespace listens
// on. The namespace has its own lo, so a local database on the
// workstation's 127.0.0.1:5432 would be out of the command's reach. The
// first process fixes that with the kernel's transparent proxying:
//
//   - an nftables rule on lo's prerouting hook sends a TCP packet to
//     127.0.0.1 to the first process's transparent listener when the
//     kernel finds no socket for it (the socket expression: a listener
//     on the port, or the connection it belongs to);
//   - the first process sees the original port as the accepted
//     connection's local address and relays it over the host socket (a
//     unix socket, which crosses network namespaces) to detour, which
//     dials the workstation's 127.0.0.1:PORT.
//
// The kernel completes the handshake before anything knows whether the
// workstation listens, so a port closed on both sides shows as a
// connection that is reset at once, not refused. IPv6 (::1) is not
// relayed: the kernel routes no ::1 packet off lo.
//
// forwardMark marks the first process's own dials into the namespace
// (intercepted connections, --expose): a port the command does not listen
// on yet is refused for them, not sent back to the workstation, where
// detour's own listener for that port would bring it back (a loop).
const forwardMark = 0x64657472 // "detr"

// loopbackTable is the namespace's only nftables table.
const loopbackTable = "detour-loopback"

// loopbackRules is the chain's rules, in order, for a transparent
// listener on 127.0.0.1:port:
//
//	iifname != "lo" accept
//	meta mark 0x64657472 accept
//	meta l4proto tcp socket transparent accept   (a socket exists)
//	meta l4proto tcp ip daddr 127.0.0.1 tproxy to 127.0.0.1:port accept
func loopbackRules(port uint16) [][]expr.Any {
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	tcp := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}
	loopback := []byte{127, 0, 0, 1}
	mark := make([]byte, 4)
	binary.NativeEndian.PutUint32(mark, forwardMark)
	portBE := binary.BigEndian.AppendUint16(nil, port)
	return [][]expr.Any{
		{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname("lo")}, accept},
		{&expr.Meta{Key: expr.MetaKeyMARK, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: mark}, accept},
		append(append([]expr.Any{}, tcp...), &expr.Socket{Key: expr.SocketKeyTransparent, Register: 1}, accept),
		append(append([]expr.Any{}, tcp...),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: loopback},
			&expr.Immediate{Register: 1, Data: loopback},
			&expr.Immediate{Register: 2, Data: portBE},
			&expr.TProxy{Family: byte(nftables.TableFamilyIPv4), TableFamily: byte(nftables.TableFamilyIPv4), RegAddr: 1, RegPort: 2},
			accept),
	}
}

func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

// applyLoopbackRules writes the table in one transaction.
func applyLoopbackRules(port uint16) error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	table := conn.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: loopbackTable})
	chain := conn.AddChain(&nftables.Chain{
		Name: "prerouting", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle,
	})
	for _, exprs := range loopbackRules(port) {
		conn.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: exprs})
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nftables rules for the workstation's loopback (the kernel needs nf_tables with the socket and tproxy expressions): %w", err)
	}
	return nil
}

// serveHostLoopback starts the transparent listener and its rules; from
// then on, connections to ports of 127.0.0.1 nothing listens on go over
// hostSocket to the workstation.
func serveHostLoopback(hostSocket string) error {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1) })
		if err == nil {
			err = serr
		}
		return err
	}}
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("transparent listener: %w", err)
	}
	if err := applyLoopbackRules(uint16(ln.Addr().(*net.TCPAddr).Port)); err != nil {
		ln.Close()
		return err
	}
	go serveTracked(ln, func(c net.Conn) { relayToHost(c.(*net.TCPConn), hostSocket) })
	return nil
}

// relayToHost joins c with the workstation's 127.0.0.1 at c's original
// port, or resets c when nothing listens there either.
func relayToHost(c *net.TCPConn, hostSocket string) {
	defer c.Close()
	port := uint16(c.LocalAddr().(*net.TCPAddr).Port)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	host, err := dialForward(ctx, hostSocket, port)
	cancel()
	if err != nil {
		_ = c.SetLinger(0) // a reset, the nearest thing to "refused" after the handshake
		return
	}
	tunnel.Join(c, host)
}

// markedDialer dials with forwardMark, past the loopback rules.
var markedDialer = net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, forwardMark) })
	if err == nil {
		err = serr
	}
	return err
}}

// serveHost answers the first process's host socket: each connection
// names a port, and detour (outside the namespaces) dials the
// workstation's 127.0.0.1:PORT for it.
func serveHost(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go answerPort(c, func(port string) (net.Conn, error) {
			return net.DialTimeout("tcp4", net.JoinHostPort("127.0.0.1", port), 5*time.Second)
		})
	}
}

// dialInside dials 127.0.0.1:port, then [::1]:port, inside the namespace,
// marked so the loopback rules leave it alone.
func dialInside(port string) (net.Conn, error) {
	var c net.Conn
	var err error
	for _, host := range []string{"127.0.0.1", "::1"} {
		if c, err = markedDialer.Dial("tcp", net.JoinHostPort(host, port)); err == nil {
			return c, nil
		}
	}
	return nil, err
}
