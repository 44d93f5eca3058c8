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

// coalescingConn joins each yamux data-frame header with the body write
// that follows it into one writev(2). yamux's send loop writes the 12-byte
// header and the body separately, which doubles the syscalls (and, with
// TCP_NODELAY, the packets) of every data frame. Headers of frames without a
// body (window updates, pings, go-away) are written at once, so nothing is
// ever held back waiting for a write that will not come.
type coalescingConn struct {
	io.ReadWriteCloser
	mu      sync.Mutex // yamux writes from one goroutine; the lock is for safety
	pending []byte
	hdr     [yamuxHeaderLen]byte
}

func newCoalescingConn(c io.ReadWriteCloser) io.ReadWriteCloser {
	if _, ok := c.(net.Conn); !ok {
		return c
	}
	return &coalescingConn{ReadWriteCloser: c}
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
	bufs := net.Buffers{c.pending, p}
	c.pending = nil
	n, err := bufs.WriteTo(c.ReadWriteCloser.(net.Conn))
	n -= yamuxHeaderLen
	if n < 0 {
		n = 0
	}
	return int(n), err
}
