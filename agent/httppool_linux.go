package agent

import (
	"errors"
	"net"
	"syscall"
)

// peekAlive peeks at a TCP connection without blocking: alive when nothing
// is there to read yet (EAGAIN); not when the peer closed it or sent bytes
// no request asked for. known is false for connections without a socket.
func peekAlive(c net.Conn) (alive, known bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false, false
	}
	var b [1]byte
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		_, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	}); err != nil {
		return false, true
	}
	// No error: 0 bytes (the peer closed) or bytes nobody asked for.
	return errors.Is(rerr, syscall.EAGAIN), true
}
