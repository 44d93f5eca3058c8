package tunnel

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
)

// yamux frame header: version u8, type u8, flags u16, stream id u32, length u32.
const (
	yamuxHeaderLen = 12
	yamuxTypeData  = 0
)

// maxJoinCopy bounds the body that a message-framed transport's
// coalescingConn copies to join it with its header. Past it the header goes
// alone: one more small message per 64 KiB costs less than the copy.
const maxJoinCopy = 64 << 10

// coalescingConn joins each yamux data-frame header with the body write
// that follows it into one write. yamux's send loop writes the 12-byte
// header and the body separately. Over a socket (net.Conn) that doubles
// the syscalls (and, with TCP_NODELAY, the packets) of every data frame, so
// the two go out in one writev(2). Over a transport that frames every
// Write as a message of its own — a Kubernetes port-forward stream, where
// each Write is a SPDY data frame relayed by the API server, the kubelet
// and the container runtime — it doubles the messages every hop parses, so
// header and body are copied into one Write (bodies up to maxJoinCopy).
// Headers of frames without a body (window updates, pings, go-away) are
// written at once, so nothing is ever held back waiting for a write that
// will not come.
type coalescingConn struct {
	io.ReadWriteCloser
	sock    net.Conn // the same connection when it is a socket, else nil
	mu      sync.Mutex
	pending []byte
	hdr     [yamuxHeaderLen]byte
	joined  []byte // header+body for a message-framed transport
}

func newCoalescingConn(c io.ReadWriteCloser) io.ReadWriteCloser {
	sock, _ := c.(net.Conn)
	return &coalescingConn{ReadWriteCloser: c, sock: sock}
}

func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending == nil {
		if len(p) == yamuxHeaderLen && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:12]) > 0 {
			copy(c.hdr[:], p)
			c.pending = c.hdr[:]
			return len(p), nil
		}
		return c.ReadWriteCloser.Write(p)
	}
	c.pending = nil
	var n int
	var err error
	switch {
	case c.sock != nil:
		bufs := net.Buffers{c.hdr[:], p}
		var n64 int64
		n64, err = bufs.WriteTo(c.sock)
		n = int(n64)
	case len(p) <= maxJoinCopy:
		c.joined = append(append(c.joined[:0], c.hdr[:]...), p...)
		n, err = c.ReadWriteCloser.Write(c.joined)
	default:
		if n, err = c.ReadWriteCloser.Write(c.hdr[:]); err == nil {
			n, err = c.ReadWriteCloser.Write(p)
			n += yamuxHeaderLen
		}
	}
	n -= yamuxHeaderLen
	if n < 0 {
		n = 0
	}
	return n, err
}
