package tunnel

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"time"
)

// yamux frame header: version u8, type u8, flags u16, stream id u32, length u32.
const (
	yamuxHeaderLen        = 12
	yamuxTypeData         = 0
	yamuxTypeWindowUpdate = 1
	yamuxFlagSYN          = 1
	yamuxFlagACK          = 2
	yamuxFlagFIN          = 4
	yamuxFlagRST          = 8
)

// maxJoinCopy bounds the body that a message-framed transport's
// coalescingConn copies to join it with its header. Past it the header goes
// alone: one more small message per 64 KiB costs less than the copy.
const maxJoinCopy = 64 << 10

// holdSetup is how long a stream's opening (SYN) or accepting (ACK) frame
// may wait for the frame that follows it, to go out in the same write. An
// opener writes its stream header at once (tunnel/spec.md), and an
// accepter's first answer often comes within it; nothing waits for these
// frames alone but the peer's Accept of a stream whose opener says nothing.
const holdSetup = time.Millisecond

// maxHeld bounds the set-up frames held at once (streams opened or
// accepted together): past it they go out.
const maxHeld = 64

// coalescingConn joins each yamux data-frame header with the body write
// that follows it into one write. yamux's send loop writes the 12-byte
// header and the body separately. Over a socket (net.Conn) that doubles
// the syscalls (and, with TCP_NODELAY, the packets) of every data frame, so
// the two go out in one writev(2). Over a transport that frames every
// Write as a message of its own — a Kubernetes port-forward stream, where
// each Write is a SPDY data frame relayed by the API server, the kubelet
// and the container runtime — it doubles the messages every hop parses, so
// header and body are copied into one Write (bodies up to maxJoinCopy).
//
// A stream's SYN and ACK window updates (no body) are held for up to
// holdSetup and go out with the next frame: a new connection's stream
// opening, its header and, back, the accept and the first answer cross the
// port-forward as one message each way instead of two; a held frame that
// no write follows goes out alone after holdSetup. Other bodyless frames
// (window updates, pings, go-away, FIN, RST) go out at once, with whatever
// is held before them, so the order of frames is kept.
type coalescingConn struct {
	io.ReadWriteCloser
	sock    net.Conn // the same connection when it is a socket, else nil
	mu      sync.Mutex
	pending []byte
	hdr     [yamuxHeaderLen]byte
	held    []byte        // set-up frames waiting for the next write
	timer   *time.Timer   // flushes held after holdSetup
	err     error         // of a flush of held frames: the connection is broken
	holdFor time.Duration // holdSetup; tests hold longer
	bufs    net.Buffers
	joined  []byte // the parts of a write for a message-framed transport
}

func newCoalescingConn(c io.ReadWriteCloser) io.ReadWriteCloser {
	sock, _ := c.(net.Conn)
	return &coalescingConn{ReadWriteCloser: c, sock: sock, holdFor: holdSetup}
}

func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.pending == nil {
		switch {
		case isDataHeader(p):
			copy(c.hdr[:], p)
			c.pending = c.hdr[:]
			return len(p), nil
		case isSetupHeader(p) && len(c.held) < maxHeld*yamuxHeaderLen:
			c.hold(p)
			return len(p), nil
		}
		return c.out(p)
	}
	c.pending = nil
	n, err := c.out(c.hdr[:], p)
	n -= yamuxHeaderLen
	if n < 0 {
		n = 0
	}
	return n, err
}

func isDataHeader(p []byte) bool {
	return len(p) == yamuxHeaderLen && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:12]) > 0
}

// isSetupHeader: a window update that opens or accepts a stream, and does
// not also end it.
func isSetupHeader(p []byte) bool {
	if len(p) != yamuxHeaderLen || p[1] != yamuxTypeWindowUpdate {
		return false
	}
	f := binary.BigEndian.Uint16(p[2:4])
	return f&(yamuxFlagSYN|yamuxFlagACK) != 0 && f&(yamuxFlagFIN|yamuxFlagRST) == 0
}

// hold keeps a set-up frame for the next write, or holdFor at most.
func (c *coalescingConn) hold(p []byte) {
	if len(c.held) == 0 {
		if c.timer == nil {
			c.timer = time.AfterFunc(c.holdFor, c.flushHeld)
		} else {
			c.timer.Reset(c.holdFor)
		}
	}
	c.held = append(c.held, p...)
}

// flushHeld writes the held frames when no write came for holdFor. A data
// header waiting for its body means the body's write is on its way: it
// takes them.
func (c *coalescingConn) flushHeld() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.held) == 0 || c.pending != nil || c.err != nil {
		return
	}
	if _, err := c.out(); err != nil {
		c.err = err
	}
}

// out writes the held frames and then parts, as one write where it can,
// and returns how many bytes of parts were written.
func (c *coalescingConn) out(parts ...[]byte) (int, error) {
	held := len(c.held)
	c.bufs = c.bufs[:0]
	if held > 0 {
		c.bufs = append(c.bufs, c.held)
		c.timer.Stop()
	}
	c.bufs = append(c.bufs, parts...)
	total := 0
	for _, b := range c.bufs {
		total += len(b)
	}
	var n int
	var err error
	switch {
	case c.sock != nil:
		bufs := c.bufs // WriteTo consumes its receiver
		var n64 int64
		n64, err = bufs.WriteTo(c.sock)
		n = int(n64)
	case len(c.bufs) == 1:
		n, err = c.ReadWriteCloser.Write(c.bufs[0])
	case total <= maxJoinCopy+held+yamuxHeaderLen:
		c.joined = c.joined[:0]
		for _, b := range c.bufs {
			c.joined = append(c.joined, b...)
		}
		n, err = c.ReadWriteCloser.Write(c.joined)
	default: // a long body: everything before it in one write, then it
		last := len(c.bufs) - 1
		c.joined = c.joined[:0]
		for _, b := range c.bufs[:last] {
			c.joined = append(c.joined, b...)
		}
		if n, err = c.ReadWriteCloser.Write(c.joined); err == nil {
			var m int
			m, err = c.ReadWriteCloser.Write(c.bufs[last])
			n += m
		}
	}
	c.held = c.held[:0]
	n -= held
	if n < 0 {
		n = 0
	}
	return n, err
}
