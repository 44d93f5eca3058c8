package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The h2c relay: a cleartext HTTP/2 connection with prior knowledge (h2c,
// gRPC) for a port whose app speaks h2c is relayed frame by frame, with
// x/net/http2's Framer and hpack, instead of going through net/http's
// HTTP/2 server, ReverseProxy and the HTTP/2 Transport (a goroutine per
// stream on each side, and the hand-offs between them).
//
// One goroutine reads the caller's connection; each request's HEADERS are
// decoded once, routed with matchRequest, and passed on, re-encoded, on an
// h2c connection of the relay's own to the backend (the app, or the
// intercept's local process through its tunnel) under a stream ID of that
// connection; one goroutine per upstream connection reads the answers.
// DATA, trailers, RST_STREAM and WINDOW_UPDATE follow the stream's
// mapping; SETTINGS, PING and GOAWAY are each connection's own.
//
// Flow control: on a stream the relay acknowledges to each side only what
// it has written to the other side (h2Ack), so what it buffers for a slow
// reader is bounded by the stream windows it advertised. On a connection
// it also acknowledges what it holds for streams whose readers are slow,
// up to h2PeerLend per peer, from the agent's h2LendPool: one stream
// whose reader stopped holds its own window, not the connection's, as it
// would between the caller and the app without the relay (an HTTP/2 or
// gRPC client gives a connection's window back as bytes arrive). One
// mutex guards the relay's state and its writes; every write it makes is
// bounded by those windows.
//
// A request it does not pass on itself (h2RequestShape, h2RouteShape:
// preview links, mirrored ports, an HTTP/1.1 or TLS local process,
// unusual requests) goes, still frame by frame, to the fallback: an
// internal HTTP/2 connection to the port's net/http server, which serves
// it through ServeHTTP as before.

const (
	h2StreamWindow  = 1 << 20 // advertised per stream, each side (as net/http's server does)
	h2ConnWindow    = 1 << 20 // advertised per connection, each side
	h2MaxStreams    = 250     // advertised to the caller (net/http's default)
	h2MaxHeaderList = 1 << 20 // advertised, and enforced by the Framer
	h2IOBuffer      = 32 << 10
	// h2MaxReadFrame is the largest frame read: the protocol's initial
	// SETTINGS_MAX_FRAME_SIZE, as the relay advertises none (the Framer's
	// own bound is 16 MiB, a buffer it keeps for the connection's life).
	h2MaxReadFrame = 16 << 10
	// h2UpStreams is assumed of an upstream until its SETTINGS say (RFC
	// 9113 recommends no less).
	h2UpStreams = 100
	h2MaxID     = 1<<31 - 1

	// h2PeerLend is the most a peer's connection is acknowledged for what
	// the relay holds and has not written (4 stalled streams' windows);
	// h2AgentLend bounds it for all the agent's relays together, so the
	// memory they may hold is at most h2AgentLend above one connection
	// window per peer.
	h2PeerLend  = 4 * h2StreamWindow
	h2AgentLend = 16 << 20
)

// h2LendPool is what the agent's h2c relays may still acknowledge on
// connections ahead of writing (h2Peer.hold).
type h2LendPool struct{ avail atomic.Int64 }

func newH2LendPool(n int64) *h2LendPool {
	p := &h2LendPool{}
	p.avail.Store(n)
	return p
}

// take returns up to n bytes of the pool, what it has.
func (p *h2LendPool) take(n int64) int64 {
	for {
		a := p.avail.Load()
		got := min(a, n)
		if got <= 0 || p.avail.CompareAndSwap(a, a-got) {
			return max(got, 0)
		}
	}
}

func (p *h2LendPool) give(n int64) { p.avail.Add(n) }

var errH2Protocol = errors.New("h2c protocol error")

// h2Peer is one end of the relay: the caller's connection, or one upstream.
type h2Peer struct {
	c      net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	fr     *http2.Framer
	enc    *hpack.Encoder
	encBuf bytes.Buffer
	dirty  bool // written to, not flushed

	// What the peer allows the relay to send.
	maxFrame uint32
	initWin  int64 // its SETTINGS_INITIAL_WINDOW_SIZE; 0 until its first SETTINGS (settled)
	settled  bool
	sendWin  int64 // the connection's window

	// What the peer sent that the relay has passed on, dropped or lent
	// for and not yet acknowledged on the connection; buffered is what it
	// holds, lent how much of that counts as acknowledged (from pool).
	unacked, buffered, lent int64
	pool                    *h2LendPool
}

func newH2Peer(c net.Conn, r io.Reader, pool *h2LendPool) *h2Peer {
	p := &h2Peer{c: c, br: bufio.NewReaderSize(r, h2IOBuffer), bw: bufio.NewWriterSize(c, h2IOBuffer),
		maxFrame: 16384, sendWin: 65535, pool: pool}
	p.fr = http2.NewFramer(p.bw, p.br)
	p.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	p.fr.MaxHeaderListSize = h2MaxHeaderList
	p.fr.SetMaxReadFrameSize(h2MaxReadFrame)
	p.fr.SetReuseFrames()
	p.enc = hpack.NewEncoder(&p.encBuf)
	return p
}

// writeSettings sends the relay's SETTINGS and opens the connection's
// window to h2ConnWindow.
func (p *h2Peer) writeSettings(s ...http2.Setting) {
	s = append(s, http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2StreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: h2MaxHeaderList})
	_ = p.fr.WriteSettings(s...)
	_ = p.fr.WriteWindowUpdate(0, h2ConnWindow-65535)
	p.dirty = true
}

// writeHeaders encodes fields for the peer and writes them as HEADERS and
// CONTINUATION frames of its maximum size.
func (p *h2Peer) writeHeaders(id uint32, fields []hpack.HeaderField, end bool) {
	p.encBuf.Reset()
	for _, f := range fields {
		_ = p.enc.WriteField(f)
	}
	block := p.encBuf.Bytes()
	for first := true; first || len(block) > 0; first = false {
		frag := block[:min(len(block), int(p.maxFrame))]
		block = block[len(frag):]
		if first {
			_ = p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndStream: end, EndHeaders: len(block) == 0})
		} else {
			_ = p.fr.WriteContinuation(id, len(block) == 0, frag)
		}
	}
	p.dirty = true
}

// ack acknowledges, when due, what the peer sent on the connection.
func (p *h2Peer) ack() {
	if n := h2Ack(p.unacked, h2ConnWindow); n > 0 {
		_ = p.fr.WriteWindowUpdate(0, n)
		p.unacked -= int64(n)
		p.dirty = true
	}
}

// hold changes what the relay holds of the peer's bytes by delta, and
// lends its connection's window what it holds, up to h2PeerLend and what
// the pool has. Bytes that leave (written, dropped) count in unacked
// before hold is told: those lent were counted when lent.
func (p *h2Peer) hold(delta int64) {
	p.buffered += delta
	switch want := min(p.buffered, h2PeerLend); {
	case want > p.lent:
		got := p.pool.take(want - p.lent)
		p.lent += got
		p.unacked += got
	case want < p.lent:
		p.pool.give(p.lent - want)
		p.unacked -= p.lent - want
		p.lent = want
	}
}

// discard forgets n bytes the relay held of the peer's: they count as
// received on its connection (acknowledged when due), once — those lent
// were counted when lent.
func (p *h2Peer) discard(n int64) {
	p.unacked += n
	p.hold(-n)
	p.ack()
}

// outstanding is what the peer may not send more than on the connection
// (the window the relay advertised): what it sent and was not yet
// acknowledged.
func (p *h2Peer) outstanding() int64 { return p.buffered - p.lent + p.unacked }

// release gives back what the peer borrowed: its connection is over.
func (p *h2Peer) release() {
	p.pool.give(p.lent)
	p.lent = 0
}

func (p *h2Peer) flush() {
	if p.dirty {
		p.dirty = false
		if p.bw.Flush() != nil {
			_ = p.c.Close() // its reader ends the rest
		}
	}
}

// settings applies the peer's SETTINGS to what the relay sends it; flows
// are the streams sent to it, whose windows move with its initial window.
//
// Until the first SETTINGS the relay sends no DATA (a stream's window is
// 0): a server may hold a new stream to its own initial window from the
// start (net/http's does, and resets a stream sent more with
// FLOW_CONTROL_ERROR), and that window is known only from its SETTINGS,
// the first frame it sends. A caller's SETTINGS come before its streams.
func (p *h2Peer) settings(f *http2.SettingsFrame, flows func(func(*h2Flow))) error {
	setWin := func(v int64) error {
		delta, over := v-p.initWin, false
		p.initWin = v
		flows(func(fl *h2Flow) {
			fl.win += delta
			over = over || fl.win > h2MaxID
		})
		if over { // RFC 9113 §6.9.2
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		return nil
	}
	if !p.settled {
		p.settled = true
		if _, ok := f.Value(http2.SettingInitialWindowSize); !ok {
			if err := setWin(65535); err != nil { // the protocol's default
				return err
			}
		}
	}
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			return setWin(int64(s.Val))
		case http2.SettingMaxFrameSize:
			p.maxFrame = s.Val
		case http2.SettingHeaderTableSize:
			p.enc.SetMaxDynamicTableSizeLimit(s.Val)
		}
		return nil
	})
	if err != nil {
		return err
	}
	_ = p.fr.WriteSettingsAck()
	p.dirty = true
	return nil
}

// h2Flow is one direction of a relayed stream: from src's stream srcID to
// dst's stream dstID (dst nil: nobody to send to, bytes dropped).
type h2Flow struct {
	s            *h2Stream
	src, dst     *h2Peer
	srcID, dstID uint32
	win          int64  // the stream's window at dst
	buf          []byte // received, waiting for a window at dst
	unacked      int64  // passed on, not yet acknowledged to src on the stream
	trailer      []hpack.HeaderField
	ended        bool // src ended the stream (END_STREAM received)
	sentEnd      bool // END_STREAM written to dst
}

// h2Stream is one request relayed: the caller's stream and the upstream's.
type h2Stream struct {
	down     uint32
	u        *h2Up // nil until an upstream is chosen, or when answered here
	up       uint32
	toUp     h2Flow
	toDown   h2Flow
	answered bool // a final response head went to the caller
	upGone   bool // the upstream stream is over (reset): the upload is dropped
}

// h2Up is one upstream connection of a relay.
type h2Up struct {
	peer       *h2Peer
	key        *backend // nil: the fallback
	route      string
	streams    map[uint32]*h2Stream
	nextID     uint32
	maxStreams uint32
	settled    bool // maxStreams is the peer's own
	goaway     bool // no new streams
	dead       bool
}

func (u *h2Up) usable() bool {
	return !u.goaway && !u.dead && uint32(len(u.streams)) < u.maxStreams && u.nextID < h2MaxID-2
}

// h2Relay is one caller's h2c connection.
type h2Relay struct {
	hp   *httpPort
	down *h2Peer

	mu      sync.Mutex
	streams map[uint32]*h2Stream // by the caller's stream ID
	ups     map[*backend][]*h2Up
	lastID  uint32
	closed  bool
	readers sync.WaitGroup

	match h2MatchReq // the caller's reader's, for routing
}

// serveH2C relays c, whose bytes are read from r (the preface first), until the
// caller closes it.
func (hp *httpPort) serveH2C(c net.Conn, r io.Reader) {
	rl := &h2Relay{hp: hp, streams: map[uint32]*h2Stream{}, ups: map[*backend][]*h2Up{}}
	rl.down = newH2Peer(c, r, hp.a.h2Lend)
	defer rl.shutdown()
	if _, err := rl.down.br.Discard(len(http2.ClientPreface)); err != nil {
		return
	}
	rl.mu.Lock()
	rl.down.writeSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: h2MaxStreams})
	rl.down.flush()
	rl.mu.Unlock()
	for {
		f, err := rl.down.fr.ReadFrame()
		if err == nil {
			err = rl.fromDown(f)
		}
		var se http2.StreamError
		switch {
		case errors.As(err, &se):
			rl.mu.Lock()
			rl.lastID = max(rl.lastID, se.StreamID)
			rl.resetDown(se.StreamID, se.Code)
			rl.flushIfIdle(rl.down) // the resets, to both sides
			rl.mu.Unlock()
			continue
		case err != nil:
			rl.goAway(err)
			return
		}
	}
}

// goAway ends the caller's connection after a connection error.
func (rl *h2Relay) goAway(err error) {
	code := http2.ErrCodeProtocol
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &ce):
		code = http2.ErrCode(ce)
	case errors.Is(err, http2.ErrFrameTooLarge):
		code = http2.ErrCodeFrameSize
	case errors.Is(err, errH2Protocol):
	default:
		return // the connection is gone
	}
	rl.mu.Lock()
	defer rl.mu.Unlock()
	_ = rl.down.fr.WriteGoAway(rl.lastID, code, nil)
	rl.down.dirty = true
	rl.down.flush()
}

// shutdown closes the caller's connection (a write to it that waits
// fails), then the upstream ones, and waits for their readers.
func (rl *h2Relay) shutdown() {
	_ = rl.down.c.Close()
	rl.mu.Lock()
	rl.closed = true
	for _, us := range rl.ups {
		for _, u := range us {
			if u.key != nil {
				u.key.removeRelayUp(u)
			}
			_ = u.peer.c.Close()
		}
	}
	rl.mu.Unlock()
	rl.readers.Wait()
	rl.mu.Lock()
	rl.down.release()
	rl.mu.Unlock()
}

// fromDown handles one frame from the caller.
func (rl *h2Relay) fromDown(f http2.Frame) error {
	if h, ok := f.(*http2.MetaHeadersFrame); ok {
		return rl.downHeaders(h)
	}
	rl.mu.Lock()
	defer rl.mu.Unlock()
	defer rl.flushIfIdle(rl.down)
	id := f.Header().StreamID
	switch f := f.(type) {
	case *http2.DataFrame:
		s := rl.streams[id]
		if s == nil {
			rl.drop(rl.down, int64(f.Length))
			return nil
		}
		return rl.data(&s.toUp, f)
	case *http2.WindowUpdateFrame:
		return rl.windowUpdate(rl.down, f, func(id uint32) *h2Flow {
			if s := rl.streams[id]; s != nil {
				return &s.toDown
			}
			return nil
		}, rl.eachDown)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		if err := rl.down.settings(f, func(do func(*h2Flow)) {
			for _, s := range rl.streams {
				do(&s.toDown)
			}
		}); err != nil {
			return err
		}
		rl.eachDown(rl.pushWaiting)
	case *http2.PingFrame:
		if !f.IsAck() {
			_ = rl.down.fr.WritePing(true, f.Data)
			rl.down.dirty = true
		}
	case *http2.RSTStreamFrame:
		if s := rl.streams[id]; s != nil {
			if s.u != nil && !s.upGone {
				_ = s.u.peer.fr.WriteRSTStream(s.up, f.ErrCode)
				s.u.peer.dirty = true
			}
			rl.forget(s)
		}
	case *http2.PushPromiseFrame:
		return fmt.Errorf("%w: PUSH_PROMISE from a client", errH2Protocol)
	}
	return nil // GOAWAY: the caller closes when done; PRIORITY: ignored
}

// flushIfIdle flushes what was written once p's reader (the caller's)
// has nothing more buffered: what a burst of frames made is sent in as
// few writes as it can.
func (rl *h2Relay) flushIfIdle(p *h2Peer) {
	if p.br.Buffered() == 0 {
		rl.flushAll()
	}
}

func (rl *h2Relay) flushAll() {
	rl.down.flush()
	for _, us := range rl.ups {
		for _, u := range us {
			u.peer.flush()
		}
	}
}

// downHeaders handles a HEADERS frame from the caller: a new request, or
// its trailers.
func (rl *h2Relay) downHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	rl.mu.Lock()
	if s := rl.streams[id]; s != nil {
		defer rl.mu.Unlock()
		defer rl.flushIfIdle(rl.down)
		if !f.StreamEnded() || s.toUp.ended {
			rl.resetDown(id, http2.ErrCodeProtocol)
			return nil
		}
		rl.trailers(&s.toUp, f.Fields)
		return nil
	}
	if id%2 == 0 || id <= rl.lastID {
		rl.mu.Unlock()
		return fmt.Errorf("%w: HEADERS on stream %d, last %d", errH2Protocol, id, rl.lastID)
	}
	rl.lastID = id
	full := len(rl.streams) >= h2MaxStreams
	rl.mu.Unlock()
	if full {
		rl.mu.Lock()
		rl.resetDown(id, http2.ErrCodeRefusedStream)
		rl.flushIfIdle(rl.down)
		rl.mu.Unlock()
		return nil
	}
	s := &h2Stream{down: id}
	s.toDown = h2Flow{s: s, dst: rl.down, dstID: id, win: rl.down.initWin} // initWin: this goroutine's own
	s.toUp = h2Flow{s: s, src: rl.down, srcID: id, ended: f.StreamEnded()}
	if f.Truncated {
		rl.answer(s, 431, "detour: request header too large")
		return nil
	}
	b, route, fail := rl.route(f.Fields)
	if fail != "" {
		rl.answer(s, 502, fail)
		return nil
	}
	u, err := rl.upstream(b, route)
	if err != nil {
		rl.hp.a.m.httpProxyErrors.WithLabelValues(route).Inc()
		rl.hp.a.log.Info("request failed", zap.String("route", route), zap.Uint16("port", rl.hp.port), zap.Error(err))
		rl.answer(s, 502, "detour: "+route+" did not answer: "+err.Error())
		return nil
	}
	rl.mu.Lock()
	defer rl.mu.Unlock()
	defer rl.flushIfIdle(rl.down)
	if u.dead || rl.closed {
		rl.answerLocked(s, 502, "detour: "+route+" did not answer: connection closed")
		return nil
	}
	s.u, s.up = u, u.nextID
	u.nextID += 2
	u.streams[s.up] = s
	rl.streams[id] = s
	s.toDown.src, s.toDown.srcID = u.peer, s.up
	s.toUp.dst, s.toUp.dstID, s.toUp.win = u.peer, s.up, u.peer.initWin
	u.peer.writeHeaders(s.up, f.Fields, s.toUp.ended)
	s.toUp.sentEnd = s.toUp.ended
	return nil
}

// route picks the backend of a new request: nil is the fallback; fail,
// when not empty, is the 502 to answer instead.
func (rl *h2Relay) route(fields []hpack.HeaderField) (b *backend, route, fail string) {
	hp := rl.hp
	if h2RequestShape(fields) != proxyHere {
		hp.h2cFallback.Inc()
		return nil, routeApp, ""
	}
	st := hp.a.reg.lookup(hp.port)
	req := h2MatchRequest(&rl.match, fields, st)
	if req == nil {
		hp.h2cFallback.Inc()
		return nil, routeApp, ""
	}
	ic, armed := matchRequest(st, req)
	b, route = hp.app, routeApp
	if ic != nil && !ic.owner.session.IsClosed() {
		var err error
		route = routeClient
		if b, err = ic.http.localBackend(context.Background()); err != nil {
			hp.a.m.httpProxyErrors.WithLabelValues(routeClient).Inc()
			hp.a.log.Info("intercepted request not delivered", zap.String("intercept", ic.name), zap.String("holder", ic.owner.user), zap.Error(err))
			return nil, route, fmt.Sprintf("detour: intercept %q of %s: %v", ic.name, ic.owner.user, err)
		}
	}
	if h2RouteShape(armed != nil, st != nil && len(st.httpMirrors) > 0, b.proto) != proxyHere {
		hp.h2cFallback.Inc()
		return nil, route, ""
	}
	hp.h2cRelayed.Inc()
	if route == routeApp {
		hp.routedToApp.Inc()
	} else {
		hp.routedToClient.Inc()
	}
	return b, route, ""
}

// upstream returns a connection to b (nil: the fallback) with room for a
// stream, dialing one if needed.
func (rl *h2Relay) upstream(b *backend, route string) (*h2Up, error) {
	rl.mu.Lock()
	for _, u := range rl.ups[b] {
		if u.usable() {
			rl.mu.Unlock()
			return u, nil
		}
	}
	rl.mu.Unlock()
	var c net.Conn
	var err error
	if b == nil {
		c, err = rl.fallbackConn()
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), rl.hp.a.cfg.DialTimeout+probeTimeout)
		c, err = b.dial(ctx)
		cancel()
	}
	if err != nil {
		return nil, err
	}
	u := &h2Up{peer: newH2Peer(c, c, rl.hp.a.h2Lend), key: b, route: route, streams: map[uint32]*h2Stream{}, nextID: 1, maxStreams: rl.upLimit(b)}
	_, _ = u.peer.bw.WriteString(http2.ClientPreface)
	u.peer.writeSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if rl.closed || b != nil && !b.addRelayUp(u, rl) {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	rl.ups[b] = append(rl.ups[b], u)
	rl.readers.Add(1)
	go rl.readUp(u)
	return u, nil
}

// upLimit is the number of streams a new connection to b is assumed to
// take until its SETTINGS say: what another connection of the relay's to
// b said, else h2UpStreams. (Beyond its limit the peer would refuse the
// streams, and the caller would have to retry them.)
func (rl *h2Relay) upLimit(b *backend) uint32 {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	for _, u := range rl.ups[b] {
		if u.settled {
			return u.maxStreams
		}
	}
	return h2UpStreams
}

// fallbackConn is an internal connection to the port's net/http server,
// which serves its end as any h2c caller's.
func (rl *h2Relay) fallbackConn() (net.Conn, error) {
	mine, theirs, err := socketPair()
	if err != nil {
		return nil, err
	}
	sc := &servedConn{Conn: addrConn{theirs, rl.down.c}, closed: make(chan struct{})}
	if !rl.hp.plain.push(sc) {
		_ = mine.Close()
		_ = theirs.Close()
		return nil, net.ErrClosed
	}
	return mine, nil
}

// addrConn gives an internal connection the caller's addresses.
type addrConn struct {
	net.Conn
	caller net.Conn
}

func (c addrConn) LocalAddr() net.Addr  { return c.caller.LocalAddr() }
func (c addrConn) RemoteAddr() net.Addr { return c.caller.RemoteAddr() }

// answer answers s here (status and a text body), as http.Error does.
func (rl *h2Relay) answer(s *h2Stream, status int, msg string) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	defer rl.flushIfIdle(rl.down)
	rl.answerLocked(s, status, msg)
}

func (rl *h2Relay) answerLocked(s *h2Stream, status int, msg string) {
	body := msg + "\n"
	rl.streams[s.down] = s
	s.upGone, s.answered = true, true
	rl.dropFlow(&s.toUp)
	s.toUp.dst = nil
	rl.down.writeHeaders(s.down, []hpack.HeaderField{
		{Name: ":status", Value: strconv.Itoa(status)},
		{Name: "content-type", Value: "text/plain; charset=utf-8"},
		{Name: "x-content-type-options", Value: "nosniff"},
		{Name: "content-length", Value: strconv.Itoa(len(body))},
	}, false)
	fl := &s.toDown
	fl.src, fl.buf, fl.ended, fl.trailer = nil, append(fl.buf[:0], body...), true, nil
	rl.push(s, fl)
}

// readUp reads an upstream connection until it ends.
func (rl *h2Relay) readUp(u *h2Up) {
	defer rl.readers.Done()
	for {
		f, err := u.peer.fr.ReadFrame()
		rl.mu.Lock()
		if err == nil {
			err = rl.fromUp(u, f)
		}
		var se http2.StreamError
		if errors.As(err, &se) {
			if s := u.streams[se.StreamID]; s != nil {
				_ = u.peer.fr.WriteRSTStream(se.StreamID, se.Code)
				u.peer.dirty = true
				rl.upReset(s, http2.ErrCodeInternal)
			}
			err = nil
		}
		if err != nil {
			rl.upDead(u, err)
			rl.flushAll()
			rl.mu.Unlock()
			return
		}
		rl.flushIfIdle(u.peer)
		rl.mu.Unlock()
	}
}

// fromUp handles one frame from an upstream connection.
func (rl *h2Relay) fromUp(u *h2Up, f http2.Frame) error {
	id := f.Header().StreamID
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		if s := u.streams[id]; s != nil {
			return rl.upHeaders(u, s, f)
		}
	case *http2.DataFrame:
		s := u.streams[id]
		if s == nil || !s.answered {
			rl.drop(u.peer, int64(f.Length))
			if s != nil {
				return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
			}
			return nil
		}
		return rl.data(&s.toDown, f)
	case *http2.WindowUpdateFrame:
		return rl.windowUpdate(u.peer, f, func(id uint32) *h2Flow {
			if s := u.streams[id]; s != nil {
				return &s.toUp
			}
			return nil
		}, func(do func(*h2Stream, *h2Flow)) {
			for _, s := range u.streams {
				do(s, &s.toUp)
			}
		})
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		if v, ok := f.Value(http2.SettingMaxConcurrentStreams); ok {
			u.maxStreams, u.settled = v, true
		}
		if err := u.peer.settings(f, func(do func(*h2Flow)) {
			for _, s := range u.streams {
				do(&s.toUp)
			}
		}); err != nil {
			return err
		}
		for _, s := range u.streams {
			rl.pushWaiting(s, &s.toUp)
		}
		rl.retire(u) // if it allows no streams now, and has none
	case *http2.PingFrame:
		if !f.IsAck() {
			_ = u.peer.fr.WritePing(true, f.Data)
			u.peer.dirty = true
		}
	case *http2.RSTStreamFrame:
		if s := u.streams[id]; s != nil {
			rl.upReset(s, f.ErrCode)
		}
	case *http2.GoAwayFrame:
		u.goaway = true
		for upID, s := range u.streams {
			if upID > f.LastStreamID { // never processed: the caller may retry
				rl.resetDown(s.down, http2.ErrCodeRefusedStream)
			}
		}
		rl.retire(u)
		if f.ErrCode == http2.ErrCodeEnhanceYourCalm {
			rl.calm()
		}
	case *http2.PushPromiseFrame:
		return fmt.Errorf("%w: PUSH_PROMISE, though disabled", errH2Protocol)
	}
	return nil
}

// upHeaders passes on a HEADERS frame from an upstream: s's answer (or an
// interim one), or its trailers.
func (rl *h2Relay) upHeaders(u *h2Up, s *h2Stream, f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	switch {
	case s.answered && !f.StreamEnded() || s.toDown.ended:
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	case s.answered:
		rl.trailers(&s.toDown, f.Fields)
	case f.Truncated: // a 502, as from net/http's Transport
		_ = u.peer.fr.WriteRSTStream(id, http2.ErrCodeProtocol)
		u.peer.dirty = true
		rl.detach(s)
		rl.failed(s, fmt.Errorf("%w: response header list over %d bytes", errH2Protocol, h2MaxHeaderList))
	default:
		status := f.PseudoValue("status")
		s.answered = !(len(status) == 3 && status[0] == '1')
		s.toDown.ended = f.StreamEnded()
		rl.down.writeHeaders(s.down, f.Fields, s.toDown.ended)
		s.toDown.sentEnd = s.toDown.ended
		rl.settle(s)
	}
	return nil
}

// calm ends the caller's connection, whose upstream connection the
// backend found abusive (ENHANCE_YOUR_CALM: net/http's server says so of
// a connection that resets too many streams before their handlers
// start, CVE-2023-44487): that connection was this caller's alone, and a
// new one would let the caller go on, the backend's bound defeated.
func (rl *h2Relay) calm() {
	rl.closed = true // no new upstream connection
	_ = rl.down.fr.WriteGoAway(rl.lastID, http2.ErrCodeEnhanceYourCalm, nil)
	rl.down.dirty = true
	rl.down.flush()
	_ = rl.down.c.Close() // its reader ends the rest
}

// upReset ends s after its upstream stream was reset with code: unanswered,
// the caller gets a 502 (as from ReverseProxy), or its retry hint; after a
// complete answer (NO_ERROR: the upload is not wanted), the caller's
// stream ends once that answer is written; else it is reset too.
func (rl *h2Relay) upReset(s *h2Stream, code http2.ErrCode) {
	switch {
	case !s.answered && code == http2.ErrCodeRefusedStream:
		rl.resetDown(s.down, code)
	case !s.answered:
		rl.detach(s)
		rl.failed(s, fmt.Errorf("stream reset: %v", code))
	case code == http2.ErrCodeNo && s.toDown.ended:
		rl.detach(s)
		rl.settle(s)
	default:
		rl.resetDown(s.down, code)
	}
}

// failed answers s with the 502 ReverseProxy's error handler gives.
func (rl *h2Relay) failed(s *h2Stream, err error) {
	route := upRoute(s.u)
	rl.hp.a.m.httpProxyErrors.WithLabelValues(route).Inc()
	rl.hp.a.log.Info("request failed", zap.String("route", route), zap.Uint16("port", rl.hp.port), zap.Error(err))
	rl.answerLocked(s, 502, "detour: "+route+" did not answer: "+err.Error())
}

func upRoute(u *h2Up) string {
	if u == nil {
		return routeApp
	}
	return u.route
}

// detach separates s from its upstream stream, which is over.
func (rl *h2Relay) detach(s *h2Stream) {
	if s.u != nil {
		delete(s.u.streams, s.up)
		rl.retire(s.u)
	}
	s.upGone = true
	rl.dropFlow(&s.toUp)
	s.toUp.dst = nil
	// What the upstream still sends on it counts on its connection only.
	rl.dropFlowUnacked(&s.toDown)
	s.toDown.src = nil
}

// closeUp takes no new streams on u, whose backend is gone (an intercept
// removed), and closes it once its streams are done.
func (rl *h2Relay) closeUp(u *h2Up) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	u.goaway = true
	rl.retire(u)
}

// upDead ends every stream of a connection that closed or failed.
func (rl *h2Relay) upDead(u *h2Up, err error) {
	if u.key != nil {
		u.key.removeRelayUp(u)
	}
	u.dead = true
	_ = u.peer.c.Close()
	u.peer.release()
	us := rl.ups[u.key]
	for i, x := range us {
		if x == u {
			rl.ups[u.key] = append(us[:i:i], us[i+1:]...)
			break
		}
	}
	if rl.closed {
		return
	}
	for _, s := range u.streams {
		if s.answered {
			rl.resetDown(s.down, http2.ErrCodeInternal)
			continue
		}
		rl.detach(s)
		rl.failed(s, err)
	}
}

// retire closes a connection that takes no new streams (going away, or
// allowed none: a new stream goes to a new connection) once it has none.
func (rl *h2Relay) retire(u *h2Up) {
	if (u.goaway || u.settled && u.maxStreams == 0) && len(u.streams) == 0 && !u.dead {
		_ = u.peer.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		u.peer.dirty = true
		u.peer.flush()
		rl.upDead(u, nil)
	}
}

// resetDown resets the caller's stream id and forgets it (and resets its
// upstream stream, if still open).
func (rl *h2Relay) resetDown(id uint32, code http2.ErrCode) {
	_ = rl.down.fr.WriteRSTStream(id, code)
	rl.down.dirty = true
	s := rl.streams[id]
	if s == nil {
		return
	}
	if s.u != nil && !s.upGone && !s.u.dead {
		_ = s.u.peer.fr.WriteRSTStream(s.up, http2.ErrCodeCancel)
		s.u.peer.dirty = true
	}
	rl.forget(s)
}

// forget drops s; what it still held counts as received on its
// connections, so their windows do not shrink.
func (rl *h2Relay) forget(s *h2Stream) {
	delete(rl.streams, s.down)
	rl.dropFlow(&s.toUp)
	rl.dropFlow(&s.toDown)
	if s.u != nil && !s.upGone {
		delete(s.u.streams, s.up)
		s.upGone = true
		rl.retire(s.u)
	}
}

// settle forgets s once both directions are over.
func (rl *h2Relay) settle(s *h2Stream) {
	switch {
	case s.toUp.sentEnd && s.toDown.sentEnd:
		rl.forget(s)
	case s.toDown.sentEnd && s.upGone:
		if !s.toUp.ended { // the upload is not wanted: stop it
			_ = rl.down.fr.WriteRSTStream(s.down, http2.ErrCodeNo)
			rl.down.dirty = true
		}
		rl.forget(s)
	}
}

// drop acknowledges n bytes received for no stream (or padding).
func (rl *h2Relay) drop(p *h2Peer, n int64) {
	p.unacked += n
	p.ack()
}

// dropFlow discards what fl holds; its source may send that much again.
func (rl *h2Relay) dropFlow(fl *h2Flow) {
	if fl.src != nil && len(fl.buf) > 0 {
		fl.src.discard(int64(len(fl.buf)))
	}
	fl.buf, fl.trailer = nil, nil
}

// dropFlowUnacked forgets fl's stream-level acknowledgments (its source's
// stream is over), keeping what it holds for its destination.
func (rl *h2Relay) dropFlowUnacked(fl *h2Flow) {
	if fl.src != nil && len(fl.buf) > 0 {
		fl.src.discard(int64(len(fl.buf)))
	}
	fl.unacked = 0
}

// data passes a DATA frame on along fl.
func (rl *h2Relay) data(fl *h2Flow, f *http2.DataFrame) error {
	src := fl.src
	if src.outstanding()+int64(f.Length) > h2ConnWindow {
		return http2.ConnectionError(http2.ErrCodeFlowControl) // RFC 9113 §6.9.1
	}
	d := f.Data()
	if pad := int64(f.Length) - int64(len(d)); pad > 0 {
		rl.drop(src, pad)
	}
	if fl.ended {
		rl.drop(src, int64(len(d)))
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeStreamClosed}
	}
	fl.ended = f.StreamEnded()
	switch {
	case fl.dst == nil:
		rl.drop(src, int64(len(d)))
	case int64(len(fl.buf)+len(d)) > h2StreamWindow:
		return fmt.Errorf("%w: stream window exceeded", errH2Protocol)
	default:
		if len(fl.buf) == 0 { // the common case: written at once, not copied
			d = d[fl.send(d, fl.ended):]
		}
		fl.buf = append(fl.buf, d...)
		src.hold(int64(len(d)))
	}
	rl.push(fl.s, fl)
	return nil
}

// send writes as much of p as the windows allow to fl's destination in
// DATA frames, the last with END_STREAM if end and all of p went, and
// returns how much went.
func (fl *h2Flow) send(p []byte, end bool) int {
	dst, sent := fl.dst, 0
	for len(p) > 0 {
		n := int(min(int64(len(p)), fl.win, dst.sendWin, int64(dst.maxFrame)))
		if n <= 0 {
			break
		}
		last := end && n == len(p)
		_ = dst.fr.WriteData(fl.dstID, last, p[:n])
		dst.dirty, fl.sentEnd = true, last
		p, sent = p[n:], sent+n
		fl.win -= int64(n)
		dst.sendWin -= int64(n)
		if fl.src != nil {
			fl.src.unacked += int64(n)
			fl.unacked += int64(n)
		}
	}
	return sent
}

// trailers passes trailers on along fl, after what it holds.
func (rl *h2Relay) trailers(fl *h2Flow, fields []hpack.HeaderField) {
	if fl.ended {
		return
	}
	fl.ended = true
	fl.trailer = append([]hpack.HeaderField(nil), fields...)
	rl.push(fl.s, fl)
}

// push writes what fl holds as its windows allow, then its end, and
// acknowledges to the source what was written.
func (rl *h2Relay) push(s *h2Stream, fl *h2Flow) {
	dst := fl.dst
	if dst == nil {
		rl.settle(s)
		return
	}
	if len(fl.buf) > 0 {
		n := fl.send(fl.buf, fl.ended && fl.trailer == nil)
		fl.buf = fl.buf[n:]
		if fl.src != nil {
			fl.src.hold(-int64(n))
		}
	}
	if len(fl.buf) == 0 {
		fl.buf = nil
		switch {
		case !fl.ended || fl.sentEnd:
		case fl.trailer != nil:
			dst.writeHeaders(fl.dstID, fl.trailer, true)
			fl.trailer, fl.sentEnd = nil, true
		default:
			_ = dst.fr.WriteData(fl.dstID, true, nil)
			dst.dirty, fl.sentEnd = true, true
		}
	}
	if src := fl.src; src != nil {
		src.ack()
		if n := h2Ack(fl.unacked, h2StreamWindow); n > 0 && !fl.ended {
			_ = src.fr.WriteWindowUpdate(fl.srcID, n)
			src.dirty = true
			fl.unacked -= int64(n)
		}
	}
	rl.settle(s)
}

// windowUpdate applies a WINDOW_UPDATE from p: flow finds the stream's
// direction toward p, each walks all of them for the connection's.
func (rl *h2Relay) windowUpdate(p *h2Peer, f *http2.WindowUpdateFrame, flow func(uint32) *h2Flow, each func(func(*h2Stream, *h2Flow))) error {
	if f.StreamID == 0 {
		p.sendWin += int64(f.Increment)
		if p.sendWin > h2MaxID {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		each(rl.pushWaiting)
		return nil
	}
	fl := flow(f.StreamID)
	if fl == nil {
		return nil
	}
	fl.win += int64(f.Increment)
	if fl.win > h2MaxID {
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeFlowControl}
	}
	rl.push(fl.s, fl)
	return nil
}

// eachDown walks the flows toward the caller.
func (rl *h2Relay) eachDown(do func(*h2Stream, *h2Flow)) {
	for _, s := range rl.streams {
		do(s, &s.toDown)
	}
}

// pushWaiting pushes fl if it holds something to send.
func (rl *h2Relay) pushWaiting(s *h2Stream, fl *h2Flow) {
	if len(fl.buf) > 0 || fl.ended && !fl.sentEnd && fl.dst != nil {
		rl.push(s, fl)
	}
}

// sniffH2C reads from br until what it holds is the h2c client preface
// (true), or cannot be (false: an HTTP/1 method starting with P).
func sniffH2C(br *bufio.Reader) (bool, error) {
	want := []byte(http2.ClientPreface)
	for n := 1; ; n = min(len(want), max(n+1, br.Buffered())) {
		b, err := br.Peek(n)
		switch {
		case !bytes.HasPrefix(want, b):
			return false, nil
		case len(b) == len(want):
			return true, nil
		case err != nil:
			return false, err
		}
	}
}
