package daemon

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/detour-dev/detour/tunnel"
)

func oks(n int) []error { return make([]error, n) }

func TestProbeUntil(t *testing.T) {
	miss := errors.New("reached a pod without the agent")
	denied := fmt.Errorf("not a cluster destination: %w", tunnel.ErrDialDenied)
	const need = 10
	for _, tc := range []struct {
		name    string
		need    int
		results []error // one per probe, in the order they start; past the end: miss
		want    string  // "" or a substring of the message
		probes  int
	}{
		{"need in a row at once", need, oks(need), "", need},
		{"a miss starts the count again", need, append(append(oks(need-1), miss), oks(need)...), "", 2 * need},
		{"never enough in a row", need, append(oks(need-1), miss), "did not send every new connection", -1},
		{"the egress rules refuse the probe: no waiting", need, []error{denied}, "could not check service web from the pod", min(need, probeParallel)},
		{"one probe", 1, oks(1), "", 1},
		{"many probes, probeParallel at a time", 100, oks(100), "", 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			n := 0
			got := probeUntil(context.Background(), 600*time.Millisecond, tc.need, func(context.Context) error {
				mu.Lock()
				defer mu.Unlock()
				n++
				if n <= len(tc.results) {
					return tc.results[n-1]
				}
				return miss
			}, "web")
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Fatalf("probeUntil = %q, want %q", got, tc.want)
			}
			if tc.probes >= 0 && n != tc.probes {
				t.Fatalf("%d probes, want %d", n, tc.probes)
			}
		})
	}
}

// TestProbeUntilRunsProbesAtOnce: probeParallel probes are in flight
// together, never more.
func TestProbeUntilRunsProbesAtOnce(t *testing.T) {
	var mu sync.Mutex
	inFlight, most := 0, 0
	got := probeUntil(context.Background(), 5*time.Second, 3*probeParallel, func(context.Context) error {
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		inFlight--
		mu.Unlock()
		return nil
	}, "web")
	if got != "" || most != probeParallel {
		t.Fatalf("probeUntil = %q with at most %d probes at once, want \"\" and %d", got, most, probeParallel)
	}
}

func TestProbesInARow(t *testing.T) {
	for _, tc := range []struct{ pods, want int }{
		{0, 10}, // no session counted: as one
		{1, 10},
		{2, 18},
		{3, 25},
		{5, 38},
		{10, 73},
		{100, 695},
		{1000, 6912},
		{1447, 9999},
		{1448, maxProbesInARow},
		{5000, maxProbesInARow},
	} {
		got := probesInARow(tc.pods)
		if got != tc.want {
			t.Errorf("probesInARow(%d) = %d, want %d", tc.pods, got, tc.want)
		}
		// The chance that one stale endpoint among pods+1 passes got
		// probes: at most staleChance, and got is the fewest that make it
		// (below the cap).
		p := float64(max(tc.pods, 1)) / float64(max(tc.pods, 1)+1)
		if got < maxProbesInARow && (math.Pow(p, float64(got)) > staleChance || math.Pow(p, float64(got-1)) <= staleChance) {
			t.Errorf("probesInARow(%d) = %d: chance %.2g with it, %.2g with one fewer; want ≤ %g and above it",
				tc.pods, got, math.Pow(p, float64(got)), math.Pow(p, float64(got-1)), staleChance)
		}
	}
}
