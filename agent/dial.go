package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/zap"

	"github.com/detour-dev/detour/tunnel"
)

// acceptClientStreams serves the streams a client opens: pod-local dials
// (--to-pod), dials from the pod's network (the local process's cluster
// network) and DNS queries.
//
// A session holds at most MaxClientStreams of them at once, and all
// sessions together (which are not bounded themselves) four times that:
// each holds a goroutine and, once dialled, a socket in the pod, whose
// descriptors the app's own traffic through the agent needs too. Past a
// bound a stream is answered as refused (busy), counted, and closed.
func (a *Agent) acceptClientStreams(sess *yamux.Session, log *zap.Logger) {
	slots := make(chan struct{}, maxClientStreams(a.cfg))
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		if bound := take(slots, a.clientStreams); bound != 0 {
			a.refuseBusy(st, bound)
			continue
		}
		if !a.conns.add(st) {
			<-slots
			<-a.clientStreams
			_ = st.Close()
			return
		}
		go func() {
			defer func() { <-slots; <-a.clientStreams }()
			defer a.conns.done(st)
			defer st.Close()
			a.serveClientStream(st, log)
		}()
	}
}

// take takes a place in both the session's and the agent's bound, or in
// neither; it returns the bound that is full, 0 when both had room.
func take(session, agent chan struct{}) int {
	select {
	case session <- struct{}{}:
	default:
		return cap(session)
	}
	select {
	case agent <- struct{}{}:
		return 0
	default:
		<-session
		return cap(agent)
	}
}

func maxClientStreams(cfg Config) int {
	if cfg.MaxClientStreams > 0 {
		return cfg.MaxClientStreams
	}
	return defaultMaxClientStreams
}

const (
	// defaultMaxClientStreams is above the 1,000 open outbound
	// connections the cluster network is measured with
	// (docs/benchmarks.md).
	defaultMaxClientStreams = 4096
	// agentStreamsPerSession: all sessions together hold this many
	// sessions' worth of client streams.
	agentStreamsPerSession = 4
)

// refuseBusy answers a stream past the session's bound in its own kind's
// terms, within a second (the accept loop waits: a flooding client slows
// only its own session).
func (a *Agent) refuseBusy(st *yamux.Stream, bound int) {
	defer st.Close()
	_ = st.SetReadDeadline(time.Now().Add(time.Second))
	kind, payload, err := tunnel.ReadStreamHeader(st)
	_ = st.SetWriteDeadline(time.Now().Add(time.Second))
	reason := fmt.Sprintf("%d client streams open, the agent's bound: close some", bound)
	switch {
	case err != nil:
		a.m.dialPod.WithLabelValues("bad_header").Inc()
	case kind == tunnel.StreamDialPod:
		a.m.dialPod.WithLabelValues("busy").Inc()
		_, _ = st.Write([]byte{tunnel.DialDenied})
	case kind == tunnel.StreamDial:
		var h tunnel.DialHeader
		_ = tunnel.DecodeStreamHeader(payload, &h)
		if h.Network != tunnel.NetworkTCP && h.Network != tunnel.NetworkUDP {
			h.Network = "unknown"
		}
		a.m.egress.WithLabelValues(h.Network, "busy", "stream-limit").Inc()
		_ = tunnel.WriteDialResult(st, tunnel.DialDenied, reason)
	case kind == tunnel.StreamDNS:
		a.m.dnsQueries.WithLabelValues("busy").Inc()
	}
}

func (a *Agent) serveClientStream(st *yamux.Stream, log *zap.Logger) {
	_ = st.SetReadDeadline(time.Now().Add(a.cfg.HelloTimeout))
	kind, payload, err := tunnel.ReadStreamHeader(st)
	_ = st.SetReadDeadline(time.Time{})
	if err != nil {
		a.m.dialPod.WithLabelValues("bad_header").Inc()
		log.Info("bad stream from client", zap.Error(err))
		return
	}
	switch kind {
	case tunnel.StreamDialPod:
		a.dialPod(st, payload)
	case tunnel.StreamDial:
		a.dialOut(st, payload, log)
	case tunnel.StreamDNS:
		a.serveDNS(st, log)
	default:
		a.m.dialPod.WithLabelValues("bad_header").Inc()
		log.Info("stream kind not opened by clients", zap.Uint8("kind", uint8(kind)))
	}
}

func (a *Agent) dialPod(st *yamux.Stream, payload []byte) {
	var h tunnel.DialPodHeader
	if err := tunnel.DecodeStreamHeader(payload, &h); err != nil || h.Port == 0 {
		a.m.dialPod.WithLabelValues("bad_header").Inc()
		_, _ = st.Write([]byte{tunnel.DialDenied})
		return
	}
	d := net.Dialer{Timeout: a.cfg.DialTimeout}
	target, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(h.Port))))
	if err != nil {
		a.m.dialPod.WithLabelValues("refused").Inc()
		_, _ = st.Write([]byte{tunnel.DialRefused})
		return
	}
	if _, err := st.Write([]byte{tunnel.DialOK}); err != nil {
		_ = target.Close()
		return
	}
	a.m.dialPod.WithLabelValues("ok").Inc()
	tunnel.Join(st, target)
}

// dialOut dials a destination from the pod's network namespace for the
// client, when the egress rules allow it (egress.go).
func (a *Agent) dialOut(st *yamux.Stream, payload []byte, log *zap.Logger) {
	var h tunnel.DialHeader
	if err := tunnel.DecodeStreamHeader(payload, &h); err != nil {
		a.m.egress.WithLabelValues("unknown", "bad_header", "").Inc()
		_ = tunnel.WriteDialResult(st, tunnel.DialDenied, err.Error())
		return
	}
	dst, err := h.Validate()
	if err != nil {
		a.m.egress.WithLabelValues("unknown", "bad_header", "").Inc()
		_ = tunnel.WriteDialResult(st, tunnel.DialDenied, err.Error())
		return
	}
	v := a.egress.DecideDial(dst, a.learned.Has)
	if !v.Allowed {
		a.m.egress.WithLabelValues(h.Network, "denied", v.Rule).Inc()
		log.Info("dial refused by the egress rules", zap.String("network", h.Network), zap.Stringer("destination", dst), zap.String("rule", v.Rule))
		_ = tunnel.WriteDialResult(st, tunnel.DialDenied, v.Reason)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.DialTimeout)
	d := net.Dialer{}
	target, err := d.DialContext(ctx, h.Network, dst.String())
	cancel()
	if err != nil {
		status, outcome := dialFailure(err)
		a.m.egress.WithLabelValues(h.Network, outcome, v.Rule).Inc()
		_ = tunnel.WriteDialResult(st, status, err.Error())
		return
	}
	if err := tunnel.WriteDialResult(st, tunnel.DialOK, ""); err != nil {
		_ = target.Close()
		return
	}
	a.m.egress.WithLabelValues(h.Network, "ok", v.Rule).Inc()
	if h.Network == tunnel.NetworkUDP {
		relayDatagrams(st, target.(*net.UDPConn), udpIdleTimeout, a.m.udpDropped.Inc)
		return
	}
	tunnel.Join(st, target)
}

// dialFailure maps a dial error to the status byte and metric outcome.
func dialFailure(err error) (uint8, string) {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return tunnel.DialRefused, "refused"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return tunnel.DialUnreachable, "timeout"
	default:
		return tunnel.DialUnreachable, "unreachable"
	}
}

// udpIdleTimeout ends a UDP relay that carried nothing either way for this
// long (the conntrack default for unreplied UDP is 30 s, for replied 120 s).
const udpIdleTimeout = 2 * time.Minute

// udpQueue bounds the datagrams waiting to go into the stream when the
// client reads slowly: past it, datagrams are dropped and counted, as a
// congested network would, rather than buffered without bound.
const udpQueue = 256

// relayDatagrams carries datagrams between a stream (u16-prefixed
// messages) and a connected UDP socket until either side ends or both
// stay idle for idle.
func relayDatagrams(st net.Conn, uc *net.UDPConn, idle time.Duration, dropped func()) {
	q := make(chan []byte, udpQueue)
	done := make(chan struct{})
	activity := make(chan struct{}, 1)
	touch := func() {
		select {
		case activity <- struct{}{}:
		default:
		}
	}
	go func() { // socket → queue
		defer close(q)
		buf := make([]byte, tunnel.MaxDatagram)
		for {
			n, err := uc.Read(buf)
			if err != nil {
				if errors.Is(err, syscall.ECONNREFUSED) {
					continue // an ICMP port unreachable for an earlier datagram
				}
				return
			}
			touch()
			select {
			case q <- append([]byte(nil), buf[:n]...):
			default:
				dropped()
			}
		}
	}()
	go func() { // queue → stream
		defer close(done)
		for p := range q {
			if tunnel.WriteMessage(st, p) != nil {
				_ = uc.Close()
				for range q {
				}
				return
			}
		}
	}()
	go watchIdle(activity, idle, func() { _ = st.Close(); _ = uc.Close() }, done)
	buf := make([]byte, tunnel.MaxDatagram)
	for { // stream → socket
		p, err := tunnel.ReadMessage(st, buf)
		if err != nil {
			break
		}
		touch()
		if _, err := uc.Write(p); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			dropped()
		}
	}
	_ = uc.Close()
	// A writer blocked on a client that stopped reading must not hold the
	// stream until the idle timer: end its write now.
	_ = st.SetWriteDeadline(time.Now())
	<-done
}

// watchIdle calls expire once no activity arrived for idle, unless done
// closes first.
func watchIdle(activity <-chan struct{}, idle time.Duration, expire func(), done <-chan struct{}) {
	t := time.NewTimer(idle)
	defer t.Stop()
	for {
		select {
		case <-activity:
			if !t.Stop() {
				<-t.C
			}
			t.Reset(idle)
		case <-t.C:
			expire()
			return
		case <-done:
			return
		}
	}
}

// network answers get-network: what the client needs to give a local
// process the pod's view of the cluster.
func (a *Agent) network() tunnel.Network {
	n := tunnel.Network{PodIP: a.cfg.PodIP, DNS: a.resolv}
	for _, p := range a.egress.ClusterCIDRs {
		n.ClusterCIDRs = append(n.ClusterCIDRs, p.String())
	}
	if a.egress.AllowAll {
		n.EgressAllow = append(n.EgressAllow, "*")
	}
	for _, p := range a.egress.Allow {
		n.EgressAllow = append(n.EgressAllow, p.String())
	}
	return n
}

func nameserverAddrs(rc tunnel.ResolvConf) []netip.Addr {
	var out []netip.Addr
	for _, s := range rc.Nameservers {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}
