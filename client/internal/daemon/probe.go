package daemon

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/tunnel"
)

// The Service check (tunnel/spec.md, expect-probe): an intercept is
// reported active once enough probe connections in a row, each through the
// Service's ClusterIP from a pod, reached agents holding it
// (probesInARow). kube-proxy may for a while send to the new pods and to a
// gone one alike, each connection to any of them.
const (
	probeWait  = time.Second            // for one probe's answer
	probeTTL   = tunnel.MaxProbeTTL / 2 // how long the agents stay armed
	probePause = 100 * time.Millisecond // after a probe that missed
	// probeParallel is how many probes run at once: each is a new
	// connection, which kube-proxy sends to an endpoint of its own choice
	// whatever else is in flight, so probes at once count as in a row.
	probeParallel = 16
)

// staleChance is the chance at most that one stale endpoint lets the
// probes through; maxProbesInARow bounds the probes, so the check's time
// (see probesInARow).
const (
	staleChance     = 1e-3
	maxProbesInARow = 10_000
)

// probesInARow is how many probe answers in a row the check needs when
// the agents of pods endpoints hold the intercept: enough that one stale
// endpoint among pods+1, which kube-proxy picks with chance 1/(pods+1) for
// each new connection, is missed by all of them with chance at most
// staleChance: (pods/(pods+1))^n ≤ staleChance, so n = ⌈ln staleChance /
// ln(pods/(pods+1))⌉ — 10 for 1 pod, 18 for 2, 73 for 10, 695 for 100,
// 6,912 for 1,000 (more stale endpoints are found sooner). It is at most
// maxProbesInARow, which bounds the check's time (10,000 are 625 rounds
// of probeParallel, each a few ms: some seconds; probeUntil's within
// bounds it in any case): past 1,447 pods the chance grows above
// staleChance (13.5 % at 5,000 pods).
func probesInARow(pods int) int {
	pods = max(pods, 1)
	n := math.Ceil(math.Log(staleChance) / math.Log(float64(pods)/float64(pods+1)))
	return int(min(n, maxProbesInARow))
}

// checkService waits, within at most within, until new connections to the
// Service reach the agents holding the intercept: kube-proxy applies the
// end of a rollout a moment after the EndpointSlices show it, and a request
// sent in between may go to a pod that is gone, and hang. It returns ""
// once they do, or says why it cannot tell; the intercept is active either
// way. service gives the Service (see fetchService).
func (r *runner) checkService(ctx context.Context, within time.Duration, service func() (*corev1.Service, error)) string {
	svc, err := service()
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
	need := probesInARow(len(sessions))
	return probeUntil(ctx, min(within, probeTTL-probeWait), need, func(ctx context.Context) error {
		return sessions[0].Probe(ctx, dst, token, probeWait)
	}, r.req.Service)
}

// fetchService starts reading the intercept's Service and returns a
// function that waits for it: the check needs it only once the agents
// hold the intercept, so the read runs meanwhile instead of after.
func (r *runner) fetchService(ctx context.Context) func() (*corev1.Service, error) {
	var svc *corev1.Service
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		svc, err = r.cs.CoreV1().Services(r.req.Namespace).Get(ctx, r.req.Service, metav1.GetOptions{})
	}()
	return func() (*corev1.Service, error) {
		<-done
		return svc, err
	}
}

// probeUntil runs probe until it succeeds need times in a row, up to
// probeParallel at once, and says why not when within runs out or probing
// cannot work. probe must be safe to call from several goroutines.
func probeUntil(ctx context.Context, within time.Duration, need int, probe func(context.Context) error, service string) string {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	inARow := 0
	for {
		err := probeBatch(ctx, min(need-inARow, probeParallel), probe)
		switch {
		case err == nil:
			if inARow += min(need-inARow, probeParallel); inARow >= need {
				return ""
			}
			continue
		case errors.Is(err, tunnel.ErrDialDenied):
			return fmt.Sprintf("could not check service %s from the pod: %v", service, err)
		}
		inARow = 0
		select {
		case <-ctx.Done():
			return fmt.Sprintf("service %s did not send every new connection to the agents within %s (last probe: %v): the first requests may still reach pods that are gone",
				service, within.Round(time.Second), err)
		case <-time.After(probePause):
		}
	}
}

// probeBatch runs n probes at once and returns the first error, one that
// says the probes are denied before any other.
func probeBatch(ctx context.Context, n int, probe func(context.Context) error) error {
	if n == 1 {
		return probe(ctx)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = probe(ctx)
		}()
	}
	wg.Wait()
	var first error
	for _, err := range errs {
		if errors.Is(err, tunnel.ErrDialDenied) {
			return err
		}
		if first == nil {
			first = err
		}
	}
	return first
}
