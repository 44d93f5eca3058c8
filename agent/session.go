package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/detour-dev/detour/tunnel"
	"github.com/hashicorp/yamux"
	"go.uber.org/zap"
)

func (a *Agent) acceptTunnel(ln net.Listener) error {
	return acceptLoop(ln, a.log, func(c net.Conn) {
		if !a.sessions.add(c) {
			_ = c.Close()
			return
		}
		a.idle.touch(time.Now())
		go func() {
			defer a.sessions.done(c)
			defer func() { a.idle.touch(time.Now()) }()
			defer c.Close()
			a.serveSession(c)
		}()
	})
}

// serveSession runs one client's tunnel session from hello to its end, then
// gives the client's intercepts back to the app.
func (a *Agent) serveSession(conn net.Conn) {
	log := a.log.With(zap.Stringer("peer", conn.RemoteAddr()))
	sess, err := tunnel.Server(conn, a.cfg.Tunnel, log)
	if err != nil {
		log.Error("tunnel session not started", zap.Error(err))
		return
	}
	defer sess.Close()

	o, ctrl, err := a.hello(sess)
	if err != nil {
		a.m.sessionEnds.WithLabelValues("bad_hello").Inc()
		log.Info("tunnel client refused", zap.Error(err))
		return
	}
	log = log.With(zap.String("user", o.user), zap.String("client", o.clientID), zap.Uint64("session", o.id))
	log.Info("client connected")
	a.m.sessions.Inc()
	defer a.m.sessions.Dec()

	dials := make(chan struct{})
	go func() {
		defer close(dials)
		a.acceptClientStreams(sess, log)
	}()
	reason := a.controlLoop(ctrl, o, log)
	given := a.reg.removeOwner(o)
	a.release(given)
	a.updateInterceptGauge()
	if reason == "client_closed" {
		// A goodbye: answer it in the session, now that the intercepts
		// are given back. The client waits for this, not for its end of
		// the connection to close, which a port-forward passes on late.
		_ = ctrl.Close()
	}
	_ = sess.Close()
	<-dials

	a.m.sessionEnds.WithLabelValues(reason).Inc()
	log.Info("client session ended; its intercepts go back to the app",
		zap.String("reason", reason), zap.Strings("intercepts", names(given)))
}

// hello accepts the control stream and checks the client's hello.
func (a *Agent) hello(sess *yamux.Session) (*owner, *yamux.Stream, error) {
	deadline := time.Now().Add(a.cfg.HelloTimeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	ctrl, err := sess.AcceptStreamWithContext(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("no control stream within %s: %w", a.cfg.HelloTimeout, err)
	}
	_ = ctrl.SetReadDeadline(deadline)
	f, err := tunnel.ReadFrame(ctrl)
	if err != nil {
		return nil, nil, fmt.Errorf("read hello: %w", err)
	}
	_ = ctrl.SetReadDeadline(time.Time{})
	refuse := func(err error) (*owner, *yamux.Stream, error) {
		_ = tunnel.WriteFrame(ctrl, tunnel.ErrorFrame(f.ID, err))
		// Give the client a moment to read why before the session closes
		// under it: until it hangs up, at most a second.
		_ = ctrl.SetReadDeadline(time.Now().Add(time.Second))
		_, _ = io.Copy(io.Discard, ctrl)
		return nil, nil, err
	}
	if f.Type != tunnel.FrameHello {
		return refuse(fmt.Errorf("first frame was %s, want hello: %w", f.Type, tunnel.ErrHelloRequired))
	}
	var h tunnel.Hello
	if err := f.Decode(&h); err != nil {
		return refuse(err)
	}
	if h.Version != tunnel.ProtocolVersion {
		return refuse(fmt.Errorf("client speaks detour protocol version %d, this agent (%s) speaks version %d: use a detour client and agent of the same release: %w",
			h.Version, a.cfg.Version, tunnel.ProtocolVersion, tunnel.ErrVersionMismatch))
	}
	if err := h.Validate(); err != nil {
		return refuse(err)
	}
	o := newOwner(a.nextOwner.Add(1), h, sess)
	if a.clients.seenBefore(o.key) {
		a.m.reconnects.Inc()
	}
	ports := a.cfg.appPorts()
	ack := tunnel.HelloAck{Version: tunnel.ProtocolVersion, AgentVersion: a.cfg.Version, Pod: a.cfg.PodName, Namespace: a.cfg.Namespace,
		Features: []string{tunnel.FeatureExpectProbe}}
	for _, p := range ports {
		ack.Ports = append(ack.Ports, tunnel.PortInfo{Port: p, Mechanisms: tunnel.Mechanisms})
	}
	reply, err := tunnel.NewFrame(tunnel.FrameHelloAck, f.ID, ack)
	if err != nil {
		return nil, nil, err
	}
	if err := tunnel.WriteFrame(ctrl, reply); err != nil {
		return nil, nil, err
	}
	return o, ctrl, nil
}

// clientSet remembers which clients have connected, to count reconnects.
// It is bounded: past maxRemembered clients it starts over.
type clientSet struct {
	mu   sync.Mutex
	seen map[[sha256.Size]byte]struct{}
}

const maxRemembered = 4096

func (c *clientSet) seenBefore(id [sha256.Size]byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.seen[id]; ok {
		return true
	}
	if c.seen == nil || len(c.seen) >= maxRemembered {
		c.seen = map[[sha256.Size]byte]struct{}{}
	}
	c.seen[id] = struct{}{}
	return false
}

// controlLoop answers the client's requests until the control stream or the
// session ends; it returns why, as a metric label.
func (a *Agent) controlLoop(ctrl *yamux.Stream, o *owner, log *zap.Logger) string {
	for {
		f, err := tunnel.ReadFrame(ctrl)
		if err != nil {
			switch {
			case errors.Is(err, io.EOF) && !o.session.IsClosed():
				return "client_closed"
			case errors.Is(err, tunnel.ErrFrameTooLarge), errors.Is(err, tunnel.ErrUnknownFrameType):
				log.Warn("protocol error on control stream; closing session", zap.Error(err))
				_ = tunnel.WriteFrame(ctrl, tunnel.ErrorFrame(0, fmt.Errorf("%w: %w", tunnel.ErrBadRequest, err)))
				return "protocol_error"
			default:
				// The session died under us: connection closed, keepalive
				// timed out (a client that went silent), or agent shutdown.
				return "lost"
			}
		}
		reply := a.handleControl(f, o, log)
		if err := tunnel.WriteFrame(ctrl, reply); err != nil {
			return "lost"
		}
	}
}

func (a *Agent) handleControl(f tunnel.Frame, o *owner, log *zap.Logger) tunnel.Frame {
	fail := func(op string, err error) tunnel.Frame {
		if op != "" {
			a.m.interceptOps.WithLabelValues(op, strconv.Itoa(int(tunnel.CodeOf(err)))).Inc()
		}
		log.Info("request refused", zap.Stringer("request", f.Type), zap.Error(err))
		return tunnel.ErrorFrame(f.ID, err)
	}
	list := func() tunnel.Frame {
		reply, err := tunnel.NewFrame(tunnel.FrameInterceptList, f.ID, tunnel.InterceptList{Intercepts: a.reg.list(o)})
		if err != nil {
			return tunnel.ErrorFrame(f.ID, err)
		}
		return reply
	}
	switch f.Type {
	case tunnel.FrameCreateIntercept:
		var req tunnel.CreateIntercept
		if err := f.Decode(&req); err != nil {
			return fail("create", err)
		}
		if !a.ready.Load() {
			return fail("create", a.shuttingDown())
		}
		ic, err := a.newIntercept(o, req)
		if err != nil {
			return fail("create", err)
		}
		dropped, err := a.reg.create(ic)
		if err != nil {
			a.release([]*intercept{ic})
			return fail("create", err)
		}
		a.release(dropped)
		a.updateInterceptGauge()
		a.m.interceptOps.WithLabelValues("create", "ok").Inc()
		log.Info("intercept created", zap.String("intercept", req.Name), zap.Uint16("port", req.Port), zap.String("mechanism", req.Mechanism))
		return list()
	case tunnel.FrameRemoveIntercept:
		var req tunnel.RemoveIntercept
		if err := f.Decode(&req); err != nil {
			return fail("remove", err)
		}
		gone, err := a.reg.remove(o, req.Name)
		if err != nil {
			return fail("remove", err)
		}
		a.release([]*intercept{gone})
		a.updateInterceptGauge()
		a.m.interceptOps.WithLabelValues("remove", "ok").Inc()
		log.Info("intercept removed", zap.String("intercept", req.Name))
		return list()
	case tunnel.FrameListIntercepts:
		return list()
	case tunnel.FrameGetEnvironment:
		reply, err := tunnel.NewFrame(tunnel.FrameEnvironment, f.ID, tunnel.Environment{Env: appEnvironment(os.Environ())})
		if err != nil {
			return fail("", err)
		}
		return reply
	case tunnel.FrameGetNetwork:
		reply, err := tunnel.NewFrame(tunnel.FrameNetwork, f.ID, a.network())
		if err != nil {
			return fail("", err)
		}
		return reply
	case tunnel.FrameExpectProbe:
		return a.expectProbe(f, o, fail)
	case tunnel.FramePing:
		reply, _ := tunnel.NewFrame(tunnel.FramePong, f.ID, tunnel.Pong{})
		return reply
	case tunnel.FrameHello:
		return fail("", fmt.Errorf("hello sent twice: %w", tunnel.ErrBadRequest))
	default:
		return fail("", fmt.Errorf("%s is not a request: %w", f.Type, tunnel.ErrBadRequest))
	}
}

func (a *Agent) updateInterceptGauge() {
	counts := a.reg.count()
	for _, mech := range tunnel.Mechanisms {
		a.m.intercepts.WithLabelValues(mech).Set(float64(counts[mech]))
	}
}

// newIntercept checks a create request and prepares what its mechanism needs.
func (a *Agent) newIntercept(o *owner, req tunnel.CreateIntercept) (*intercept, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	switch req.Mechanism {
	case tunnel.MechanismTCP:
		if len(req.Args) > 0 {
			return nil, fmt.Errorf("intercept %q: the tcp mechanism takes no settings (got %s): use --mechanism http for header matching: %w", req.Name, argKeys(req.Args), tunnel.ErrBadRequest)
		}
		return &intercept{name: req.Name, port: req.Port, mechanism: req.Mechanism, owner: o}, nil
	case tunnel.MechanismHTTP:
		s, err := tunnel.ParseHTTPArgs(req.Args)
		if err != nil {
			return nil, fmt.Errorf("intercept %q: %w", req.Name, err)
		}
		if err := a.reg.serves(req.Port); err != nil {
			return nil, err // before probing a port that is not the app's
		}
		return a.newHTTPIntercept(context.Background(), o, req, s)
	case tunnel.MechanismTCPMirror, tunnel.MechanismHTTPMirror:
		return a.newMirrorIntercept(o, req)
	}
	return nil, unsupportedMechanism(req.Name, req.Mechanism)
}

func argKeys(args map[string][]string) string {
	keys := make([]string, 0, len(args))
	for k := range args {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

// agentOwnVariables are set for the agent itself, not copied from the app.
var agentOwnVariables = map[string]bool{"POD_NAME": true, "POD_NAMESPACE": true, "POD_IP": true, "PATH": true, "HOME": true, "HOSTNAME": true}

// appEnvironment is the app container's environment from the agent's: the
// webhook copied the app's env and envFrom into the agent container.
func appEnvironment(environ []string) map[string]string {
	env := make(map[string]string, len(environ))
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || agentOwnVariables[k] || strings.HasPrefix(k, "DETOUR_") {
			continue
		}
		env[k] = v
	}
	appRuntimeEnvironment(env, environ)
	return env
}
