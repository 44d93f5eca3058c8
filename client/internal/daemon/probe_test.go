package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/detour-dev/detour/tunnel"
)

func oks(n int) []error { return make([]error, n) }

func TestProbeUntil(t *testing.T) {
	miss := errors.New("reached a pod without the agent")
	denied := fmt.Errorf("not a cluster destination: %w", tunnel.ErrDialDenied)
	for _, tc := range []struct {
		name    string
		results []error // one per probe; past the end: miss
		want    string  // "" or a substring of the message
		probes  int
	}{
		{"probesInARow in a row at once", oks(probesInARow), "", probesInARow},
		{"a miss starts the count again", append(append(oks(probesInARow-1), miss), oks(probesInARow)...), "", 2 * probesInARow},
		{"never enough in a row", append(oks(probesInARow-1), miss), "did not send every new connection", -1},
		{"the egress rules refuse the probe: no waiting", []error{denied}, "could not check service web from the pod", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := 0
			got := probeUntil(context.Background(), 600*time.Millisecond, func(context.Context) error {
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
