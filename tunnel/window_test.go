package tunnel

import (
	"io"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/zap/zaptest"

	"github.com/detour-dev/detour/internal/delayconn"
)

// slowLink returns a client and a server session joined by loopback TCP
// with rtt/2 of delay each way.
func slowLink(t *testing.T, rtt time.Duration, srvCfg, cliCfg Config) (srv, cli *yamux.Session) {
	t.Helper()
	a, b := delayconn.Pair(t, rtt/2)
	log := zaptest.NewLogger(t)
	srv, err := Server(a, srvCfg, log)
	if err != nil {
		t.Fatal(err)
	}
	cli, err = Client(b, cliCfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close(); srv.Close() })
	return srv, cli
}

// smallWindows is a config whose fixed window (256 KiB) caps one stream at
// about 256 KiB per round trip.
func smallWindows() Config {
	c := DefaultConfig()
	c.StreamWindow = 256 << 10
	c.StreamWindowMax = 8 << 20
	c.SessionWindowBudget = 12 << 20
	return c
}

// TestStreamWindowGrowsWithTheRoundTrip: over a 40 ms round trip, a stream
// whose reader keeps up grows its window past StreamWindow (the fixed
// window of yamux alone never does), and gives the growth back to the
// session's budget when it closes.
func TestStreamWindowGrowsWithTheRoundTrip(t *testing.T) {
	srv, cli := slowLink(t, 40*time.Millisecond, smallWindows(), smallWindows())
	st, err := cli.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	const size = 12 << 20
	go func() {
		buf := make([]byte, 256<<10)
		for sent := 0; sent < size; sent += len(buf) {
			if _, err := st.Write(buf); err != nil {
				return
			}
		}
	}()
	acc, err := srv.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, acc, size); err != nil {
		t.Fatal(err)
	}
	grown := srv.WindowGrown()
	t.Logf("window grown by %d KiB past 256 KiB", grown>>10)
	if grown < 1<<20 {
		t.Fatalf("after %d MiB over a 40 ms round trip the stream's window grew by %d KiB, want at least 1 MiB", size>>20, grown>>10)
	}
	st.Close()
	acc.Close()
	waitFor(t, "the budget given back", func() bool { return srv.WindowGrown() == 0 })
}

// TestStalledStreamsStayWithinTheBudget: streams whose readers stop, some
// after a fast start (a grown window) and some at once, never hold more
// window than streams × StreamWindow + SessionWindowBudget, and a stream
// whose reader never took a window does not grow at all.
func TestStalledStreamsStayWithinTheBudget(t *testing.T) {
	cfg := smallWindows()
	srv, cli := slowLink(t, 20*time.Millisecond, cfg, cfg)
	const streams = 6
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cli.Close()
	for i := 0; i < streams; i++ {
		st, err := cli.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			for {
				if _, err := st.Write(buf); err != nil {
					return
				}
			}
		}()
		acc, err := srv.AcceptStream()
		if err != nil {
			t.Fatal(err)
		}
		if i < streams-1 {
			// A fast start, then the reader stops.
			if _, err := io.CopyN(io.Discard, acc, 6<<20); err != nil {
				t.Fatal(err)
			}
			continue
		}
		// The last reader stops at once: its window must not grow.
		before := srv.WindowGrown()
		if _, err := io.ReadFull(acc, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond) // 10 round trips
		if after := srv.WindowGrown(); after != before {
			t.Errorf("a reader that stopped at once grew the session's windows from %d to %d KiB", before>>10, after>>10)
		}
	}
	g := srv.WindowGrown()
	t.Logf("%d streams grew by %d KiB together (budget %d KiB)", streams-1, g>>10, cfg.SessionWindowBudget>>10)
	if g == 0 || g > cfg.SessionWindowBudget {
		t.Fatalf("%d streams grew by %d KiB together, want more than 0 and at most the budget, %d KiB", streams-1, g>>10, cfg.SessionWindowBudget>>10)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5 s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
