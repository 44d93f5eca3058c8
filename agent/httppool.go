package agent

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// maxIdleUpstream bounds the idle connections kept per HTTP/1.1 backend,
// as MaxIdleConnsPerHost did for the Transport it replaces.
const maxIdleUpstream = 256

// upConn is one connection to an HTTP/1.1 backend, with its buffers.
type upConn struct {
	c  net.Conn
	br *bufio.Reader // reads through lr
	bw *bufio.Writer
	lr headLimit
}

// headLimit bounds what is read through it while a response head is read
// (n > 0): past that, reads fail with errRespTooLarge. n == 0: no bound.
type headLimit struct {
	r io.Reader
	n int64
}

func (l *headLimit) Read(p []byte) (int, error) {
	if l.n == 0 {
		return l.r.Read(p)
	}
	if l.n < 0 {
		return 0, errRespTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	if l.n -= int64(n); l.n == 0 {
		l.n = -1
	}
	return n, err
}

// h1Pool keeps the idle connections to one HTTP/1.1 backend (the app, or
// an intercept's local process through its tunnel) for the connection
// loop (httpconn.go). The most recently used is reused first.
type h1Pool struct {
	dial dialFunc

	mu     sync.Mutex
	idle   []*upConn
	closed bool
}

// get returns an idle connection (reused true) or a new one.
func (p *h1Pool) get(ctx context.Context) (uc *upConn, reused bool, err error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		uc = p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
	}
	p.mu.Unlock()
	if uc != nil {
		return uc, true, nil
	}
	uc, err = p.fresh(ctx)
	return uc, false, err
}

// fresh dials a new connection.
func (p *h1Pool) fresh(ctx context.Context) (*upConn, error) {
	c, err := p.dial(ctx)
	if err != nil {
		return nil, err
	}
	uc := &upConn{c: c, bw: bufio.NewWriterSize(c, 4<<10), lr: headLimit{r: c}}
	uc.br = bufio.NewReaderSize(&uc.lr, 4<<10)
	return uc, nil
}

// put keeps uc for the next request, or closes it when the pool is full
// or closed.
func (p *h1Pool) put(uc *upConn) {
	p.mu.Lock()
	if !p.closed && len(p.idle) < maxIdleUpstream {
		p.idle = append(p.idle, uc)
		uc = nil
	}
	p.mu.Unlock()
	if uc != nil {
		_ = uc.c.Close()
	}
}

// close closes the idle connections; those in use are closed when their
// request ends.
func (p *h1Pool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, uc := range idle {
		_ = uc.c.Close()
	}
}

// idleAlive reports whether an idle connection can still carry a request
// whose body could not be sent again: the peer has not closed it (an app's
// keep-alive timeout) and sent nothing unasked. A TCP connection is peeked
// without blocking; another (a tunnel stream) is read with a deadline
// already past, which reports a closed stream before it times out.
func idleAlive(uc *upConn) bool {
	if uc.br.Buffered() > 0 {
		return false
	}
	if alive, known := peekAlive(uc.c); known {
		return alive
	}
	_ = uc.c.SetReadDeadline(time.Unix(1, 0))
	_, err := uc.br.Peek(1)
	_ = uc.c.SetReadDeadline(time.Time{})
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
