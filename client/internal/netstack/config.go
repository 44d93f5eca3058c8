package netstack

import (
	"context"
	"net"
	"net/netip"

	"go.uber.org/zap"
)

// Handler decides what becomes of the connections the namespace opens.
type Handler interface {
	// DialTCP returns the far end for a TCP connection to dst. It is
	// called before the handshake with the process completes: an error
	// resets the process's connection (it sees "connection refused" at
	// once, not a hang).
	DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error)
	// ServeUDP serves one UDP flow from the process to dst; conn carries
	// its datagrams and is closed by ServeUDP when the flow ends.
	ServeUDP(conn net.Conn, dst netip.AddrPort)
}

// Config configures a Stack.
type Config struct {
	// FD is the TUN device (IFF_TUN|IFF_NO_PI); the Stack does not close it.
	FD  int
	MTU uint32
	// MaxInFlight bounds TCP handshakes waiting on DialTCP; SYNs past it
	// are dropped (the process retries), as a full listen backlog would.
	MaxInFlight int
	Handler     Handler
	Log         *zap.Logger
}
