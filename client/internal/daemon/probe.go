package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/tunnel"
)

// The Service check (tunnel/spec.md, expect-probe): an intercept is
// reported active once this many probe connections in a row, each through
// the Service's ClusterIP from a pod, reached agents holding it. kube-proxy
// may for a while send to the new pods and to a gone one alike, each
// connection to either: with one stale endpoint of two, n answers in a row
// happen by chance 1 in 2^n times (3 let a hang through in CI).
const (
	probesInARow = 10
	probeWait    = time.Second            // for one probe's answer
	probeTTL     = tunnel.MaxProbeTTL / 2 // how long the agents stay armed
	probePause   = 100 * time.Millisecond // after a probe that missed
)

// checkService waits, within at most within, until new connections to the
// Service reach the agents holding the intercept: kube-proxy applies the
// end of a rollout a moment after the EndpointSlices show it, and a request
// sent in between may go to a pod that is gone, and hang. It returns ""
// once they do, or says why it cannot tell; the intercept is active either
// way.
func (r *runner) checkService(ctx context.Context, within time.Duration) string {
	svc, err := r.cs.CoreV1().Services(r.req.Namespace).Get(ctx, r.req.Service, metav1.GetOptions{})
	if err != nil {
		return fmt.Sprintf("could not read service %s to check it: %v", r.req.Service, err)
	}
	ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err != nil || len(r.req.Ports) == 0 {
		return "" // headless: clients reach the pods themselves
	}
	sessions := r.sessions()
	if len(sessions) == 0 {
		return "no pod session to check the service from"
	}
	for _, s := range sessions {
		if !s.Agent().HasFeature(tunnel.FeatureExpectProbe) {
			return "" // agents of an earlier release: nothing to ask
		}
	}
	port := r.req.Ports[0]
	token := client.NewProbeToken()
	for _, s := range sessions {
		if err := s.ExpectProbe(ctx, port.AppPort, token, probeTTL); err != nil {
			return fmt.Sprintf("could not check service %s: %v", r.req.Service, err)
		}
	}
	dst := netip.AddrPortFrom(ip, uint16(port.Port))
	return probeUntil(ctx, min(within, probeTTL-probeWait), func(ctx context.Context) error {
		return sessions[0].Probe(ctx, dst, token, probeWait)
	}, r.req.Service)
}

// probeUntil runs probe until it succeeds probesInARow times in a row, and
// says why not when within runs out or probing cannot work.
func probeUntil(ctx context.Context, within time.Duration, probe func(context.Context) error, service string) string {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	inARow := 0
	var last error
	for {
		err := probe(ctx)
		switch {
		case err == nil:
			if inARow++; inARow == probesInARow {
				return ""
			}
			continue
		case errors.Is(err, tunnel.ErrDialDenied):
			return fmt.Sprintf("could not check service %s from the pod: %v", service, err)
		}
		inARow, last = 0, err
		select {
		case <-ctx.Done():
			return fmt.Sprintf("service %s did not send every new connection to the agents within %s (last probe: %v): the first requests may still reach pods that are gone",
				service, within.Round(time.Second), last)
		case <-time.After(probePause):
		}
	}
}
