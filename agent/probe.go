package agent

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/detour-dev/detour/tunnel"
)

// Service probes (tunnel/spec.md, expect-probe): a client arms the agent
// with a token for an app port it intercepts, then connects through the
// Service and writes the probe line; the agent answers it instead of
// routing the connection, which tells the client that kube-proxy sends
// the Service's connections to this pod.

// probes holds the armed tokens per app port.
type probes struct {
	mu    sync.Mutex
	armed map[uint16][]armedProbe
	now   func() time.Time
}

type armedProbe struct {
	line  []byte // ProbePrefix, the token, '\n'
	until time.Time
}

func newProbes(now func() time.Time) *probes {
	return &probes{armed: map[uint16][]armedProbe{}, now: now}
}

// minProbeToken and maxProbeToken bound a token's hex length.
const (
	minProbeToken = 32
	maxProbeToken = 64
)

// checkExpectProbe validates an expect-probe request.
func checkExpectProbe(req tunnel.ExpectProbe) error {
	if n := len(req.Token); n < minProbeToken || n > maxProbeToken {
		return fmt.Errorf("probe token must be %d to %d hex digits, got %d: %w", minProbeToken, maxProbeToken, n, tunnel.ErrBadRequest)
	}
	if _, err := hex.DecodeString(req.Token); err != nil {
		return fmt.Errorf("probe token is not hex: %w", tunnel.ErrBadRequest)
	}
	if ttl := time.Duration(req.TTLMillis) * time.Millisecond; ttl <= 0 || ttl > tunnel.MaxProbeTTL {
		return fmt.Errorf("probe ttl must be in (0, %s], got %dms: %w", tunnel.MaxProbeTTL, req.TTLMillis, tunnel.ErrBadRequest)
	}
	return nil
}

func (p *probes) arm(req tunnel.ExpectProbe) {
	line := []byte(tunnel.ProbePrefix + req.Token + "\n")
	until := p.now().Add(time.Duration(req.TTLMillis) * time.Millisecond)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed[req.Port] = append(p.live(req.Port), armedProbe{line, until})
}

// lines returns the probe lines armed for port now, dropping expired ones.
func (p *probes) lines(port uint16) [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	live := p.live(port)
	if len(live) == 0 {
		delete(p.armed, port)
		return nil
	}
	p.armed[port] = live
	out := make([][]byte, len(live))
	for i, a := range live {
		out[i] = a.line
	}
	return out
}

func (p *probes) live(port uint16) []armedProbe {
	now := p.now()
	var live []armedProbe
	for _, a := range p.armed[port] {
		if now.Before(a.until) {
			live = append(live, a)
		}
	}
	return live
}

// probeMatch is what a connection's first bytes say.
type probeMatch int

const (
	notProbe  probeMatch = iota // a byte differs from every armed line: route it
	needMore                    // a prefix of some armed line so far
	probeLine                   // exactly an armed line
)

// matchProbe compares what has arrived with the armed lines.
func matchProbe(got []byte, lines [][]byte) probeMatch {
	m := notProbe
	for _, l := range lines {
		switch {
		case len(got) >= len(l) && bytes.Equal(got[:len(l)], l):
			return probeLine
		case len(got) < len(l) && bytes.HasPrefix(l, got):
			m = needMore
		}
	}
	return m
}

// answerProbe reports whether c was a probe of port, which it then
// answered. Connections to a port nobody armed are not looked at.
func (a *Agent) answerProbe(c net.Conn, port uint16) bool {
	lines := a.probes.lines(port)
	if len(lines) == 0 {
		return false
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return false
	}
	line, err := peekProbe(tc, lines, tunnel.ProbePeekWait)
	if err != nil || line == nil {
		return false
	}
	if _, err := io.ReadFull(c, make([]byte, len(line))); err != nil {
		return true // it was a probe; the prober is gone
	}
	_, _ = io.WriteString(c, tunnel.ProbeAnswer)
	return true
}

// peekProbe looks at c's first bytes without taking them, for up to wait
// or until they cannot be an armed line, and returns the line they are.
func peekProbe(c *net.TCPConn, lines [][]byte, wait time.Duration) ([]byte, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return nil, err
	}
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, len(tunnel.ProbePrefix)+maxProbeToken+1)
	seen := 0
	for {
		n := 0
		var perr error
		err := rc.Read(func(fd uintptr) bool {
			n, _, perr = unix.Recvfrom(int(fd), buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
			if perr == unix.EAGAIN || (perr == nil && n == seen && n > 0) {
				return false // nothing new yet: wait for more
			}
			return true
		})
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, nil
		case err != nil:
			return nil, err
		case perr != nil:
			return nil, perr
		case n == 0:
			return nil, nil // closed before a byte
		}
		seen = n
		switch matchProbe(buf[:n], lines) {
		case notProbe:
			return nil, nil
		case probeLine:
			for _, l := range lines {
				if n >= len(l) && bytes.Equal(buf[:len(l)], l) {
					return l, nil
				}
			}
		}
	}
}

// expectProbe arms port for the session's probes; only a session that
// holds an intercept on the port may, so no one else can make the agent
// look at its connections.
func (a *Agent) expectProbe(f tunnel.Frame, o *owner, fail func(string, error) tunnel.Frame) tunnel.Frame {
	var req tunnel.ExpectProbe
	if err := f.Decode(&req); err != nil {
		return fail("", err)
	}
	if err := checkExpectProbe(req); err != nil {
		return fail("", err)
	}
	held := false
	for _, ic := range a.reg.list(o) {
		held = held || (ic.Yours && ic.Port == req.Port)
	}
	if !held {
		return fail("", fmt.Errorf("probes of port %d: this session holds no intercept there: %w", req.Port, tunnel.ErrInterceptNotFound))
	}
	a.probes.arm(req)
	reply, err := tunnel.NewFrame(tunnel.FrameProbeArmed, f.ID, tunnel.ProbeArmed{})
	if err != nil {
		return fail("", err)
	}
	return reply
}
