package daemon

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestWatchSilence(t *testing.T) {
	base := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		ticks  []time.Duration // wall-clock advance before each tick
		atDone time.Duration   // advance before the session ends
		want   time.Duration
	}{
		{"steady ticks, then a lost connection: a blip", []time.Duration{time.Second, time.Second}, time.Second, 0},
		{"asleep 40s, the session found dead on wake", []time.Duration{time.Second}, 40 * time.Second, 40 * time.Second},
		{"a late tick, then the session dies right after", []time.Duration{time.Second, 25 * time.Second}, 2 * time.Second, 25 * time.Second},
		{"a gap the session survived, lost much later", append([]time.Duration{20 * time.Second}, repeat(time.Second, 40)...), time.Second, 0},
		{"a gap just under the bound", []time.Duration{5 * time.Second}, time.Second, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			clock := base
			now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
			ticks := make(chan time.Time)
			done := make(chan struct{})
			result := make(chan time.Duration, 1)
			go func() { result <- watchSilence(context.Background(), done, ticks, now) }()
			// The clock moves only after the first tick is taken, which the
			// watcher does after reading its starting time.
			t0 := base
			for _, d := range tc.ticks {
				t0 = t0.Add(d)
				ticks <- t0 // a tick carries its time
			}
			mu.Lock()
			clock = t0.Add(tc.atDone)
			mu.Unlock()
			close(done)
			if got := <-result; got != tc.want {
				t.Fatalf("silent = %s, want %s", got, tc.want)
			}
		})
	}
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if got := watchSilence(ctx, make(chan struct{}), make(chan time.Time), time.Now); got != 0 {
			t.Fatalf("cancelled: %s", got)
		}
	})
}

func repeat(d time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}
