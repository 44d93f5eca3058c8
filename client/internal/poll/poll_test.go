package poll

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

func TestUntil(t *testing.T) {
	boom := errors.New("boom")
	for _, c := range []struct {
		name         string
		steps        []string // progress of each call; "done" ends it, "fail" fails
		timeout      time.Duration
		wantOut      string
		wantTimedOut bool
		wantErr      error
		wantLast     string
	}{
		{"done at once, nothing shown", []string{"done"}, time.Second, "", false, nil, ""},
		{"each change shown once", []string{"a", "a", "b", "b", "done"}, time.Second, "a\nb\n", false, nil, "b"},
		{"empty progress shows nothing", []string{"", "a", "", "done"}, time.Second, "a\n", false, nil, "a"},
		{"the check's error, as it is", []string{"a", "fail"}, time.Second, "a\n", false, boom, "a"},
		{"time runs out", []string{"a"}, 50 * time.Millisecond, "a\n", true, context.DeadlineExceeded, "a"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			i := 0
			r, timedOut, err := Until(context.Background(), 5*time.Millisecond, c.timeout, &out, func(ctx context.Context) (bool, string, error) {
				s := c.steps[min(i, len(c.steps)-1)]
				i++
				switch s {
				case "done":
					return true, "", nil
				case "fail":
					return false, "", boom
				}
				return false, s, nil
			})
			if timedOut != c.wantTimedOut || !errors.Is(err, c.wantErr) || (c.wantErr == nil) != (err == nil) {
				t.Fatalf("timedOut=%v err=%v; want %v %v", timedOut, err, c.wantTimedOut, c.wantErr)
			}
			if out.String() != c.wantOut || r.Last != c.wantLast {
				t.Fatalf("out=%q last=%q; want %q %q", out.String(), r.Last, c.wantOut, c.wantLast)
			}
		})
	}
}

func TestUntilEndsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := 0
	_, timedOut, err := Until(ctx, time.Millisecond, time.Minute, nil, func(context.Context) (bool, string, error) {
		calls++
		return false, "", nil
	})
	if !timedOut || !errors.Is(err, context.Canceled) || calls > 1 {
		t.Fatalf("timedOut=%v err=%v calls=%d", timedOut, err, calls)
	}
}
