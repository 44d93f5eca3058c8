package tunnel

import (
	"io"
	"net"
	"runtime"
	"sync"
	"syscall"
)

// spliceTCP copies src to dst with splice(2) through a pipe, as io.Copy
// between two *net.TCPConn does, but issues each splice as a raw system
// call. Both sockets are non-blocking and the pipe is too
// (SPLICE_F_NONBLOCK), so a splice never sleeps; waiting for readiness is
// left to Go's poller (RawConn.Read/Write), as with any socket read.
//
// Why raw: a splice into a loopback or veth socket runs the receiver's
// TCP input too (softirq on the sending CPU), often for longer than
// sysmon's 20 µs tick; with io.Copy's ordinary system calls sysmon then
// takes the P away from the relaying thread and starts or wakes another
// (futex), and stays at its shortest tick while that keeps happening. In a
// relay of small keep-alive requests that runtime work was a fifth of the
// agent's CPU (docs/benchmarks.md, "Passthrough against haproxy").
func spliceTCP(dst, src *net.TCPConn) (int64, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	wc, err := dst.SyscallConn()
	if err != nil {
		return 0, err
	}
	p, err := getPipe()
	if err != nil {
		return 0, err
	}
	var total int64
	for {
		var n int
		var serr error
		err := rc.Read(func(fd uintptr) bool {
			n, serr = rawSplice(int(fd), p.w, maxSplice)
			return serr != syscall.EAGAIN
		})
		if err == nil {
			err = serr
		}
		if err != nil || n == 0 { // n == 0: EOF
			pipes.Put(p) // empty: everything spliced in was spliced out
			return total, err
		}
		for left := n; left > 0; {
			var m int
			err := wc.Write(func(fd uintptr) bool {
				m, serr = rawSplice(p.r, int(fd), left)
				return serr != syscall.EAGAIN
			})
			if err == nil {
				err = serr
			}
			if err == nil && m == 0 {
				err = io.ErrShortWrite
			}
			if err != nil {
				p.close() // bytes left in it: not reusable
				return total, err
			}
			left -= m
			total += int64(m)
		}
	}
}

// maxSplice is the most one splice asks to move and the pipe's size, as
// in Go's own splice. A splice into a socket moves what its send buffer
// takes, so one raw call holds its P for at most about that much copying
// by the kernel.
const maxSplice = 1 << 20

// rawSplice moves up to n bytes from in to out without blocking. EINTR is
// retried here: returning it to the poller would wait for an edge that
// may not come.
func rawSplice(in, out, n int) (int, error) {
	const flags = 0x1 | 0x2 // SPLICE_F_MOVE | SPLICE_F_NONBLOCK
	for {
		r, _, e := syscall.RawSyscall6(syscall.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), flags)
		switch e {
		case 0:
			return int(r), nil
		case syscall.EINTR:
			continue
		default:
			return 0, e
		}
	}
}

// A pipe is the kernel buffer a splice moves pages through. Pipes are
// pooled (a new one per copy would cost three system calls per
// connection); the finalizer closes those the pool drops.
type pipe struct{ r, w int }

var pipes sync.Pool

func getPipe() (*pipe, error) {
	if p, ok := pipes.Get().(*pipe); ok {
		return p, nil
	}
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return nil, err
	}
	// As Go's own splice does: a splice moves at most what the pipe holds
	// (64 KiB by default), so a larger pipe means fewer calls per MB. Best
	// effort: without it the copy is only slower.
	_, _, _ = syscall.Syscall(syscall.SYS_FCNTL, uintptr(fds[0]), syscall.F_SETPIPE_SZ, maxSplice)
	p := &pipe{r: fds[0], w: fds[1]}
	runtime.SetFinalizer(p, (*pipe).close)
	return p, nil
}

func (p *pipe) close() {
	runtime.SetFinalizer(p, nil)
	syscall.Close(p.r)
	syscall.Close(p.w)
}
