package agent

import (
	"io"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/detour-dev/detour/tunnel"
)

// teeConn is an inbound connection on a port with tcp-mirrors: what the
// agent reads from it (the client→app bytes) is queued, as it is read, to
// each mirror's copy of the connection; the relay never waits for them.
type teeConn struct {
	net.Conn
	copies []*connCopy
	once   sync.Once
}

// tee starts a copy of c for every mirror that has room for one.
func tee(c net.Conn, mirrors []*intercept) *teeConn {
	t := &teeConn{Conn: c}
	source := addrPortString(c.RemoteAddr())
	for _, ic := range mirrors {
		if cc := ic.mirror.startConn(source); cc != nil {
			t.copies = append(t.copies, cc)
		}
	}
	return t
}

func (t *teeConn) Read(p []byte) (int, error) {
	n, err := t.Conn.Read(p)
	if n > 0 {
		for _, cc := range t.copies {
			cc.add(p[:n])
		}
	}
	return n, err
}

// CloseWrite half-closes the connection, as tunnel.Join and the HTTP
// router expect of an inbound connection.
func (t *teeConn) CloseWrite() error {
	if cw, ok := t.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// end tells the copies the connection is over: each ends whole once its
// queue is sent.
func (t *teeConn) end() {
	t.once.Do(func() {
		for _, cc := range t.copies {
			cc.end()
		}
	})
}

// connCopy is one connection's copy for one tcp-mirror: a bounded queue of
// framed chunks and the goroutine (run) that writes them to a mirrored
// stream. A copy that would queue more than mirrorConnQueue is cut off:
// its stream ends without the end chunk, so the workstation never takes a
// prefix for the whole connection.
type connCopy struct {
	m      *mirror
	source string
	wake   chan struct{}

	mu     sync.Mutex
	chunks [][]byte // framed (tunnel.AppendMirrorChunk)
	queued int      // bytes queued or being written
	ended  bool     // the connection is over: the end chunk follows the queue
	cut    string   // why the copy stopped early ("" while it goes on)
	st     net.Conn // the stream, once open
}

// copyReleased: the mirror was removed; such copies are not counted.
const copyReleased = "released"

// startConn starts copying one connection, or returns nil: the mirror is
// gone, or copies mirrorConns connections already (counted as dropped).
func (m *mirror) startConn(source string) *connCopy {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.ic.owner.session.IsClosed() {
		return nil
	}
	if len(m.conns) >= mirrorConns {
		m.count(copyBusy)
		return nil
	}
	cc := &connCopy{m: m, source: source, wake: make(chan struct{}, 1)}
	m.conns[cc] = struct{}{}
	m.wg.Add(1)
	go cc.run()
	return cc
}

func (cc *connCopy) signal() {
	select {
	case cc.wake <- struct{}{}:
	default:
	}
}

// add queues p (bytes the agent read from the connection), or cuts the
// copy off when that would overflow its queue. It never blocks on the
// stream.
func (cc *connCopy) add(p []byte) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.cut != "" || cc.ended {
		return
	}
	if cc.queued+len(p) > mirrorConnQueue {
		cc.stopLocked(copyCut)
		return
	}
	if cc.m.queued.Add(int64(len(p))) > mirrorConnsQueue {
		cc.m.queued.Add(-int64(len(p)))
		cc.stopLocked(copyCut)
		return
	}
	for len(p) > 0 {
		n := min(len(p), tunnel.MaxMirrorChunk)
		cc.chunks = append(cc.chunks, tunnel.AppendMirrorChunk(make([]byte, 0, 4+n), p[:n]))
		cc.queued += n
		p = p[n:]
	}
	cc.signal()
}

// stopLocked ends the copy early: queued chunks are dropped, and a write
// in flight is interrupted (its deadline expires at once).
func (cc *connCopy) stopLocked(why string) {
	if cc.cut == "" {
		cc.cut = why
	}
	cc.chunks = nil
	cc.m.queued.Add(-int64(cc.queued)) // what is being written is given back too: the write ends now
	cc.queued = 0
	if cc.st != nil {
		_ = cc.st.SetWriteDeadline(time.Now())
	}
	cc.signal()
}

func (cc *connCopy) abort() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.stopLocked(copyReleased)
}

func (cc *connCopy) end() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.ended = true
	cc.signal()
}

// run opens the mirrored stream and writes the copy, then counts how it
// went. A client that closes the stream early (it could not reach its
// local target) stops the copy.
func (cc *connCopy) run() {
	m := cc.m
	defer m.wg.Done()
	defer func() {
		m.mu.Lock()
		delete(m.conns, cc)
		m.mu.Unlock()
	}()
	st, err := m.ic.owner.openStream(tunnel.StreamMirrored, m.ic, cc.source)
	if err != nil {
		m.log.Debug("mirror copy not opened", zap.Error(err))
		m.count(copyFailed)
		return
	}
	defer st.Close()
	cc.mu.Lock()
	cc.st = st
	if cc.cut != "" {
		_ = st.SetWriteDeadline(time.Now())
	}
	cc.mu.Unlock()
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		_, _ = io.Copy(io.Discard, st) // the client sends nothing: EOF is its goodbye
	}()
	outcome := cc.write(st, gone)
	cc.mu.Lock()
	if cc.cut != "" {
		outcome = cc.cut // why a write failed
	}
	cc.stopLocked(outcome) // nothing more is queued; what was is given back
	cc.mu.Unlock()
	if outcome != copyReleased {
		m.count(outcome)
	}
	_ = st.SetReadDeadline(time.Now())
	<-gone
}

// write sends the queue as it fills, then the end chunk; it returns the
// copy's outcome.
func (cc *connCopy) write(st net.Conn, gone <-chan struct{}) string {
	for {
		cc.mu.Lock()
		for len(cc.chunks) == 0 && !cc.ended && cc.cut == "" {
			cc.mu.Unlock()
			select {
			case <-cc.wake:
			case <-gone:
				return copyFailed
			}
			cc.mu.Lock()
		}
		chunks, ended, cut := cc.chunks, cc.ended, cc.cut
		cc.chunks = nil
		cc.mu.Unlock()
		if cut != "" {
			return cut
		}
		if ended {
			// Catching up after the connection ended is bounded too.
			_ = st.SetWriteDeadline(time.Now().Add(mirrorCopyTimeout))
		}
		sent := 0
		for _, c := range chunks {
			if _, err := st.Write(c); err != nil {
				return copyCut // cut off, could not catch up in time, or the session ended
			}
			sent += len(c) - 4
		}
		cc.mu.Lock()
		if cc.cut == "" {
			cc.queued -= sent
			cc.m.queued.Add(-int64(sent))
		}
		last := cc.ended && len(cc.chunks) == 0 && cc.cut == ""
		cc.mu.Unlock()
		if last && ended {
			if _, err := st.Write(tunnel.AppendMirrorChunk(nil, nil)); err != nil {
				return copyCut
			}
			return copyCopied
		}
	}
}
