package clusternet

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/detour-dev/detour/client"
)

// TestSessionLinkReconnectsOnceForAllWaiters: while the agent is
// unreachable, dials that arrive together share one connect attempt (not
// one after another, each its own timeout), and a dial whose context ends
// returns then.
func TestSessionLinkReconnectsOnceForAllWaiters(t *testing.T) {
	var calls atomic.Int32
	l := NewSessionLink(func(context.Context) (*client.Session, error) {
		calls.Add(1)
		time.Sleep(300 * time.Millisecond)
		return nil, errors.New("agent down")
	})
	defer l.Close()
	start := time.Now()
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := l.session(context.Background()); err == nil {
				t.Error("a session from a connect that failed")
			}
		}()
	}
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Errorf("%d connect attempts for 10 waiting dials, want 1", n)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("10 dials took %s: they waited in turn", took)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, err := l.session(ctx); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 250*time.Millisecond {
		t.Errorf("a dial with a 50 ms context: %v after %s", err, time.Since(start))
	}
}
