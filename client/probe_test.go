package client

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/detour-dev/detour/tunnel"
)

// TestProbeIsOneRoundTrip: the probe line goes out with the dial stream's
// header, not after the agent's dial result: this agent answers the dial
// only once it has the line, which a client waiting for the result first
// never sends.
func TestProbeIsOneRoundTrip(t *testing.T) {
	clientEnd, agentEnd := net.Pipe()
	ys, err := tunnel.Server(agentEnd, tunnel.DefaultConfig(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer ys.Close()
	token := NewProbeToken()
	go func() {
		ctrl, err := ys.AcceptStream()
		if err != nil {
			return
		}
		hello, err := tunnel.ReadFrame(ctrl)
		if err != nil {
			return
		}
		ack, _ := tunnel.NewFrame(tunnel.FrameHelloAck, hello.ID, tunnel.HelloAck{Version: tunnel.ProtocolVersion, Features: []string{tunnel.FeatureExpectProbe}})
		_ = tunnel.WriteFrame(ctrl, ack)
		st, err := ys.AcceptStream()
		if err != nil {
			return
		}
		defer st.Close()
		if kind, _, err := tunnel.ReadStreamHeader(st); err != nil || kind != tunnel.StreamDial {
			t.Errorf("stream kind %v, %v: want a dial", kind, err)
			return
		}
		_ = st.SetReadDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReader(io.LimitReader(st, int64(len(tunnel.ProbePrefix+token+"\n")))).ReadString('\n')
		if line != tunnel.ProbePrefix+token+"\n" {
			t.Errorf("before the dial result the stream carried %q (%v), want the probe line", line, err)
		}
		_ = tunnel.WriteDialResult(st, tunnel.DialOK, "")
		_, _ = io.WriteString(st, tunnel.ProbeAnswer)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := Open(ctx, clientEnd, Options{ClientID: "test-client", User: "alice@laptop"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Probe(ctx, netip.MustParseAddrPort("10.96.0.10:80"), token, 4*time.Second); err != nil {
		t.Fatalf("probe: %v", err)
	}
}
