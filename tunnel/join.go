package tunnel

import (
	"io"
	"net"
	"sync"

	"github.com/hashicorp/yamux"
)

// Join copies a→b and b→a until both directions end, then closes both.
//
// When one direction reaches EOF it half-closes the other side's write end,
// so a peer that sends a request and then shuts down its write side still
// gets its full answer. An error in either direction (reset, timeout) closes
// both connections at once, which ends the other copy too.
//
// io.Copy between two *net.TCPConn uses splice(2), so passthrough bytes do
// not cross user space.
func Join(a, b net.Conn) (aToB, bToA int64) {
	var wg sync.WaitGroup
	var once sync.Once
	abort := func() {
		once.Do(func() {
			_ = a.Close()
			_ = b.Close()
		})
	}
	pipe := func(dst, src net.Conn, n *int64) {
		defer wg.Done()
		var err error
		*n, err = io.Copy(dst, src)
		if err != nil {
			abort()
			return
		}
		closeWrite(dst)
	}
	wg.Add(2)
	go pipe(b, a, &aToB)
	go pipe(a, b, &bToA)
	wg.Wait()
	abort()
	return aToB, bToA
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
