package client

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/detour-dev/detour/tunnel"
)

// ExpectProbe arms the agent for probes of appPort (an app port this
// session intercepts) with token, for ttl (tunnel/spec.md, expect-probe).
func (s *Session) ExpectProbe(ctx context.Context, appPort uint16, token string, ttl time.Duration) error {
	req := tunnel.ExpectProbe{Port: appPort, Token: token, TTLMillis: ttl.Milliseconds()}
	if err := s.request(ctx, tunnel.FrameExpectProbe, req, tunnel.FrameProbeArmed, &tunnel.ProbeArmed{}); err != nil {
		return fmt.Errorf("arm probes of port %d: %w", appPort, err)
	}
	return nil
}

// NewProbeToken returns a random token for ExpectProbe and Probe.
func NewProbeToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ErrNotProbeAnswer: a probe connection reached something that did not
// answer as an armed agent does (the app of a pod without the agent, or a
// workstation): the Service does not yet send everything to the agents.
var ErrNotProbeAnswer = errors.New("the probe reached something other than an agent holding the intercept")

// Probe connects to svc from the pod's network namespace (a dial stream:
// the egress rules apply), with the probe line sent along with the dial
// (one round trip, not two), and waits up to wait for an armed agent's
// answer.
func (s *Session) Probe(ctx context.Context, svc netip.AddrPort, token string, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	c, err := s.dial(ctx, "tcp", svc, []byte(tunnel.ProbePrefix+token+"\n"))
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	line, err := bufio.NewReader(io.LimitReader(c, int64(len(tunnel.ProbeAnswer)))).ReadString('\n')
	if line == tunnel.ProbeAnswer {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("probe %s: no answer in %s: %w", svc, wait, ErrNotProbeAnswer)
	}
	return fmt.Errorf("probe %s: got %q (%v): %w", svc, line, err, ErrNotProbeAnswer)
}
