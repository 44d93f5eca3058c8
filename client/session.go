package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/detour-dev/detour/tunnel"
	"github.com/hashicorp/yamux"
	"go.uber.org/zap"
)

// Options configure a Session.
type Options struct {
	// ClientID labels this client in the agent's log; required.
	ClientID string
	// Secret proves which client this is: a session whose secret is
	// that of an intercept's creator takes the intercept back (a
	// reconnect); no other session can. Use one NewSecret per daemon and
	// never show it; empty means a new one for this session.
	Secret string
	// User is shown to other developers who collide with our intercepts.
	// Empty means user@hostname of this process.
	User string
	// Tunnel tunes the yamux session; the zero value means tunnel.DefaultConfig().
	Tunnel tunnel.Config
	// DialTimeout bounds dials to local targets (default 5s).
	DialTimeout time.Duration
	Log         *zap.Logger
}

// Session is a live tunnel session with one agent.
type Session struct {
	opts  Options
	log   *zap.Logger
	sess  *yamux.Session
	ctrl  *yamux.Stream
	agent tunnel.HelloAck

	writeMu sync.Mutex
	nextID  atomic.Uint32

	mu      sync.Mutex
	pending map[uint32]chan tunnel.Frame
	targets map[string]string // intercept name → local address

	wg        sync.WaitGroup
	closeOnce sync.Once
	done      chan struct{}

	relays atomic.Int64 // intercepted connections being relayed now
}

// NewSecret returns a random hello secret (32 bytes from crypto/rand,
// hex-encoded).
func NewSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// DefaultUser returns user@hostname for this process.
func DefaultUser() string {
	name := "unknown"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	return printableLabel(name + "@" + host)
}

// printableLabel replaces what agents refuse in a label (control
// characters, invalid UTF-8) with '?'.
func printableLabel(s string) string {
	s = strings.ToValidUTF8(s, "?")
	return strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, s)
}

// Open starts a session over conn (a port-forward stream, or any net.Conn)
// and says hello. The session owns conn from
// then on; Close releases both.
func Open(ctx context.Context, conn io.ReadWriteCloser, opts Options) (*Session, error) {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.User == "" {
		opts.User = DefaultUser()
	}
	if opts.Tunnel == (tunnel.Config{}) {
		opts.Tunnel = tunnel.DefaultConfig()
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.Secret == "" {
		opts.Secret = NewSecret()
	}
	hello := tunnel.Hello{Version: tunnel.ProtocolVersion, ClientID: opts.ClientID, User: opts.User, Secret: opts.Secret}
	if err := hello.Validate(); err != nil {
		_ = conn.Close()
		return nil, err
	}
	ys, err := tunnel.Client(conn, opts.Tunnel, opts.Log)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	s := &Session{
		opts:    opts,
		log:     opts.Log,
		sess:    ys,
		pending: map[uint32]chan tunnel.Frame{},
		targets: map[string]string{},
		done:    make(chan struct{}),
	}
	if err := s.hello(ctx, hello); err != nil {
		_ = ys.Close()
		return nil, err
	}
	s.wg.Add(3)
	go s.readLoop()
	go s.acceptLoop()
	go func() {
		defer s.wg.Done()
		<-ys.CloseChan()
		s.closeOnce.Do(func() { close(s.done) })
	}()
	return s, nil
}

func (s *Session) hello(ctx context.Context, h tunnel.Hello) error {
	ctrl, err := s.sess.OpenStream()
	if err != nil {
		return fmt.Errorf("open control stream: %w", err)
	}
	s.ctrl = ctrl
	f, err := tunnel.NewFrame(tunnel.FrameHello, s.nextID.Add(1), h)
	if err != nil {
		return err
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = ctrl.SetDeadline(deadline)
		defer ctrl.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { _ = ctrl.SetDeadline(time.Now()) })
	defer func() {
		// If the context ended after the reply came, the AfterFunc may
		// have left an expired deadline: clear it for the read loop.
		if !stop() {
			_ = ctrl.SetDeadline(time.Time{})
		}
	}()
	writeErr := tunnel.WriteFrame(ctrl, f)
	reply, err := tunnel.ReadFrame(ctrl)
	if writeErr != nil && (err != nil || reply.Type != tunnel.FrameError) {
		// No refusal to show: the write failure is the story.
		return fmt.Errorf("say hello to agent: %w", writeErr)
	}
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("agent did not answer hello: %w", ctx.Err())
		}
		return fmt.Errorf("agent did not answer hello (is this a detour agent's tunnel port?): %w", err)
	}
	switch reply.Type {
	case tunnel.FrameHelloAck:
		if err := reply.Decode(&s.agent); err != nil {
			return err
		}
		return nil
	case tunnel.FrameError:
		return fmt.Errorf("agent refused the session: %w", tunnel.AsError(reply))
	default:
		return fmt.Errorf("agent answered hello with %s: %w", reply.Type, tunnel.ErrBadRequest)
	}
}

// Agent returns what the agent said about itself in its hello reply.
func (s *Session) Agent() tunnel.HelloAck { return s.agent }

// Done is closed when the session ends, by Close or because it was lost.
func (s *Session) Done() <-chan struct{} { return s.done }

// Close gives every intercept back and ends the session. Half-closing the
// control stream first tells the agent this is a goodbye, not a lost client;
// the agent answers by closing its side once the intercepts are given back
// (a tunnel round trip). It removes them either way, so Close waits only
// briefly (100 ms) for that answer (an older agent never sends it).
func (s *Session) Close() error {
	_ = s.ctrl.Close()
	select {
	case <-s.done:
	case <-time.After(100 * time.Millisecond):
	}
	err := s.sess.Close()
	s.wg.Wait()
	return err
}

// InterceptSpec is one intercept to create.
type InterceptSpec struct {
	Name      string
	Port      uint16 // app port in the pod
	Mechanism string // tunnel.MechanismTCP when empty
	LocalAddr string // where intercepted connections go, e.g. 127.0.0.1:8080
	Args      map[string][]string
}

// CreateIntercept asks the agent for spec.Port's traffic and relays every
// intercepted connection to spec.LocalAddr. It returns all of the agent's
// intercepts after the change.
func (s *Session) CreateIntercept(ctx context.Context, spec InterceptSpec) ([]tunnel.InterceptInfo, error) {
	if spec.Mechanism == "" {
		spec.Mechanism = tunnel.MechanismTCP
	}
	if _, _, err := net.SplitHostPort(spec.LocalAddr); err != nil {
		return nil, fmt.Errorf("intercept %q: local address %q: want host:port: %w", spec.Name, spec.LocalAddr, err)
	}
	req := tunnel.CreateIntercept{Name: spec.Name, Port: spec.Port, Mechanism: spec.Mechanism, Args: spec.Args}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	previous, existed := s.targets[spec.Name]
	s.targets[spec.Name] = spec.LocalAddr // before asking: the first stream may beat the reply
	s.mu.Unlock()

	var list tunnel.InterceptList
	if err := s.request(ctx, tunnel.FrameCreateIntercept, req, tunnel.FrameInterceptList, &list); err != nil {
		s.mu.Lock()
		if existed {
			s.targets[spec.Name] = previous
		} else {
			delete(s.targets, spec.Name)
		}
		s.mu.Unlock()
		return nil, fmt.Errorf("create intercept %q on port %d: %w", spec.Name, spec.Port, err)
	}
	return list.Intercepts, nil
}

// RemoveIntercept gives the intercept's port back to the app.
func (s *Session) RemoveIntercept(ctx context.Context, name string) ([]tunnel.InterceptInfo, error) {
	var list tunnel.InterceptList
	if err := s.request(ctx, tunnel.FrameRemoveIntercept, tunnel.RemoveIntercept{Name: name}, tunnel.FrameInterceptList, &list); err != nil {
		return nil, fmt.Errorf("remove intercept %q: %w", name, err)
	}
	// The target stays known: connections the agent handed over before it
	// removed the intercept may still be on their way, and must reach the
	// workstation. The agent opens no new ones for a removed intercept.
	return list.Intercepts, nil
}

// Drain waits until no intercepted connection is being relayed, or ctx
// ends. After RemoveIntercept the agent sends new connections to the app;
// Drain before Close lets those already relayed here finish.
func (s *Session) Drain(ctx context.Context) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for s.relays.Load() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d intercepted connections still open: %w", s.relays.Load(), ctx.Err())
		case <-s.done:
			return tunnel.ErrSessionClosed
		case <-tick.C:
		}
	}
	return nil
}

// List returns every intercept on the agent, this client's and others'.
func (s *Session) List(ctx context.Context) ([]tunnel.InterceptInfo, error) {
	var list tunnel.InterceptList
	if err := s.request(ctx, tunnel.FrameListIntercepts, tunnel.ListIntercepts{}, tunnel.FrameInterceptList, &list); err != nil {
		return nil, fmt.Errorf("list intercepts: %w", err)
	}
	return list.Intercepts, nil
}

// Environment returns the app container's environment, as the agent reports it.
func (s *Session) Environment(ctx context.Context) (map[string]string, error) {
	var env tunnel.Environment
	if err := s.request(ctx, tunnel.FrameGetEnvironment, tunnel.GetEnvironment{}, tunnel.FrameEnvironment, &env); err != nil {
		return nil, fmt.Errorf("get the app's environment: %w", err)
	}
	return env.Env, nil
}

// Ping measures a control round trip.
func (s *Session) Ping(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	if err := s.request(ctx, tunnel.FramePing, tunnel.Ping{}, tunnel.FramePong, &tunnel.Pong{}); err != nil {
		return 0, fmt.Errorf("ping agent: %w", err)
	}
	return time.Since(start), nil
}

// DialPod opens a connection to 127.0.0.1:port inside the pod, through the
// tunnel (for --to-pod).
func (s *Session) DialPod(ctx context.Context, port uint16) (net.Conn, error) {
	st, err := s.sess.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("dial pod port %d: %w", port, s.sessionErr(err))
	}
	stop := context.AfterFunc(ctx, func() { _ = st.SetReadDeadline(time.Now()) })
	defer func() {
		if !stop() {
			_ = st.SetReadDeadline(time.Time{})
		}
	}()
	if err := tunnel.WriteStreamHeader(st, tunnel.StreamDialPod, tunnel.DialPodHeader{Port: port}); err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("dial pod port %d: %w", port, err)
	}
	var status [1]byte
	if _, err := io.ReadFull(st, status[:]); err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("dial pod port %d: no answer from agent: %w", port, err)
	}
	_ = st.SetReadDeadline(time.Time{})
	switch status[0] {
	case tunnel.DialOK:
		return st, nil
	case tunnel.DialRefused:
		_ = st.Close()
		return nil, fmt.Errorf("dial pod port %d: nothing listens on 127.0.0.1:%d in the pod", port, port)
	default:
		_ = st.Close()
		return nil, fmt.Errorf("dial pod port %d: agent refused (status %d)", port, status[0])
	}
}

func (s *Session) sessionErr(err error) error {
	if s.sess.IsClosed() {
		return fmt.Errorf("%w: %w", tunnel.ErrSessionClosed, err)
	}
	return err
}

// request sends one control request and waits for its reply.
func (s *Session) request(ctx context.Context, t tunnel.FrameType, v any, want tunnel.FrameType, out any) error {
	id := s.nextID.Add(1)
	f, err := tunnel.NewFrame(t, id, v)
	if err != nil {
		return err
	}
	ch := make(chan tunnel.Frame, 1)
	s.mu.Lock()
	s.pending[id] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pending, id)
		s.mu.Unlock()
	}()

	s.writeMu.Lock()
	err = tunnel.WriteFrame(s.ctrl, f)
	s.writeMu.Unlock()
	if err != nil {
		return s.sessionErr(err)
	}
	select {
	case reply := <-ch:
		switch reply.Type {
		case want:
			return reply.Decode(out)
		case tunnel.FrameError:
			return tunnel.AsError(reply)
		default:
			return fmt.Errorf("agent answered %s with %s: %w", t, reply.Type, tunnel.ErrBadRequest)
		}
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return tunnel.ErrSessionClosed
	}
}

func (s *Session) readLoop() {
	defer s.wg.Done()
	for {
		f, err := tunnel.ReadFrame(s.ctrl)
		if err != nil {
			if !errors.Is(err, io.EOF) && !s.sess.IsClosed() {
				s.log.Warn("control stream failed; closing session", zap.Error(err))
			}
			_ = s.sess.Close()
			return
		}
		s.mu.Lock()
		ch := s.pending[f.ID]
		s.mu.Unlock()
		if ch != nil {
			ch <- f
			continue
		}
		if f.Type == tunnel.FramePing {
			pong, _ := tunnel.NewFrame(tunnel.FramePong, f.ID, tunnel.Pong{})
			s.writeMu.Lock()
			err := tunnel.WriteFrame(s.ctrl, pong)
			s.writeMu.Unlock()
			if err != nil {
				_ = s.sess.Close()
				return
			}
			continue
		}
		if f.Type == tunnel.FrameError {
			s.log.Warn("agent reported an error", zap.Error(tunnel.AsError(f)))
		}
	}
}

// acceptLoop relays every intercepted connection the agent opens.
func (s *Session) acceptLoop() {
	defer s.wg.Done()
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		st, err := s.sess.AcceptStream()
		if err != nil {
			return
		}
		conns.Add(1)
		s.relays.Add(1)
		go func() {
			defer conns.Done()
			defer s.relays.Add(-1)
			defer st.Close()
			s.relay(st)
		}()
	}
}

func (s *Session) relay(st *yamux.Stream) {
	_ = st.SetReadDeadline(time.Now().Add(10 * time.Second))
	kind, payload, err := tunnel.ReadStreamHeader(st)
	_ = st.SetReadDeadline(time.Time{})
	if err != nil || kind != tunnel.StreamIntercepted && kind != tunnel.StreamMirrored {
		s.log.Warn("bad stream from agent", zap.Error(err), zap.Uint8("kind", uint8(kind)))
		return
	}
	var h tunnel.InterceptedHeader
	if err := tunnel.DecodeStreamHeader(payload, &h); err != nil {
		s.log.Warn("bad stream header from agent", zap.Error(err))
		return
	}
	s.mu.Lock()
	target, ok := s.targets[h.Intercept]
	s.mu.Unlock()
	if !ok {
		s.log.Warn("connection for an intercept this client does not hold; closed", zap.String("intercept", h.Intercept))
		return
	}
	local, err := net.DialTimeout("tcp", target, s.opts.DialTimeout)
	if err != nil {
		// Closing the stream closes the cluster client's connection at once;
		// the session and other connections carry on.
		s.log.Warn("local target unreachable; intercepted connection closed",
			zap.String("intercept", h.Intercept), zap.String("target", target), zap.Error(err))
		return
	}
	if kind == tunnel.StreamMirrored {
		s.log.Debug("mirrored connection", zap.String("mirror", h.Intercept), zap.String("from", h.Source), zap.String("to", target))
		replayMirrored(st, local, s.done)
		return
	}
	s.log.Debug("intercepted connection", zap.String("intercept", h.Intercept), zap.String("from", h.Source), zap.String("to", target))
	tunnel.Join(st, local)
}

// mirrorLinger bounds how long a mirrored connection's local target may
// go on answering after the copy ended whole.
const mirrorLinger = 30 * time.Second

// replayMirrored writes a mirrored stream's copy to local and throws away
// what local answers. A copy that ends whole half-closes local, as the
// original connection's client did; one that was cut off resets it, so the
// local process never takes a prefix for a whole connection.
// A local process that reads nothing for mirrorLinger is reset, and so is
// every copy when the session ends (done).
func replayMirrored(st net.Conn, local net.Conn, done <-chan struct{}) {
	defer local.Close()
	replayed := make(chan struct{})
	defer close(replayed)
	go func() {
		select {
		case <-done:
			_ = local.Close()
		case <-replayed:
		}
	}()
	answered := make(chan struct{})
	go func() {
		defer close(answered)
		_, _ = io.Copy(io.Discard, local)
	}()
	buf := make([]byte, tunnel.MaxMirrorChunk)
	for {
		chunk, end, err := tunnel.ReadMirrorChunk(st, buf)
		if err == nil && !end {
			_ = local.SetWriteDeadline(time.Now().Add(mirrorLinger))
			_, err = local.Write(chunk)
		}
		if err != nil {
			if tc, ok := local.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // Close resets
			}
			_ = local.Close()
			<-answered
			return
		}
		if end {
			break
		}
	}
	if cw, ok := local.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	select {
	case <-answered:
	case <-time.After(mirrorLinger):
		_ = local.Close()
		<-answered
	}
}
