package tunnel

import (
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// Join copies a→b and b→a until both directions end, then closes both.
//
// When one direction reaches EOF it half-closes the other side's write end,
// so a peer that sends a request and then shuts down its write side still
// gets its full answer. An error in either direction (reset, timeout)
// aborts both connections: their deadlines expire at once, which unblocks
// the other copy (a yamux stream's Close alone would only send FIN), and a
// TCP side is reset rather than closed, so a cut-off transfer never looks
// complete to the peer.
//
// Between two *net.TCPConn the copy is splice(2) (spliceTCP), so
// passthrough bytes do not cross user space.
func Join(a, b net.Conn) (aToB, bToA int64) {
	var wg sync.WaitGroup
	var once sync.Once
	closeBoth := func(reset bool) {
		once.Do(func() {
			for _, c := range []net.Conn{a, b} {
				if reset {
					_ = c.SetDeadline(time.Now())
					if tc, ok := c.(*net.TCPConn); ok {
						_ = tc.SetLinger(0)
					}
				}
				_ = c.Close()
			}
		})
	}
	pipe := func(dst, src net.Conn, n *int64) {
		defer wg.Done()
		var err error
		*n, err = copyConn(dst, src)
		if err != nil {
			closeBoth(true)
			return
		}
		closeWrite(dst)
	}
	wg.Add(2)
	go pipe(b, a, &aToB)
	go pipe(a, b, &bToA)
	wg.Wait()
	closeBoth(false)
	return aToB, bToA
}

// relayBufferSize is the copy buffer for relays that cannot splice. yamux
// sends every Write as its own frame, with a syscall for the header and one
// for the body, so large writes cut the per-byte cost of the tunnel
// (docs/benchmarks.md: 256 KiB against io.Copy's 32 KiB).
const relayBufferSize = 256 << 10

var relayBuffers = sync.Pool{New: func() any { b := make([]byte, relayBufferSize); return &b }}

// copyConn copies src to dst: by splice(2) between two TCP connections,
// else through a large pooled buffer.
func copyConn(dst, src net.Conn) (int64, error) {
	dstTCP, ok1 := dst.(*net.TCPConn)
	srcTCP, ok2 := src.(*net.TCPConn)
	if ok1 && ok2 {
		return spliceTCP(dstTCP, srcTCP)
	}
	buf := relayBuffers.Get().(*[]byte)
	defer relayBuffers.Put(buf)
	// The wrappers hide ReadFrom/WriteTo, which would otherwise pick their
	// own 32 KiB buffer.
	return io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *buf)
}

// closeWrite sends EOF to the peer while keeping the read side open.
func closeWrite(c net.Conn) {
	switch c := c.(type) {
	case interface{ CloseWrite() error }:
		_ = c.CloseWrite()
	case *yamux.Stream:
		// A yamux stream's Close is a half-close: it sends FIN and reads go
		// on until the peer's FIN.
		_ = c.Close()
	default:
		_ = c.Close()
	}
}
