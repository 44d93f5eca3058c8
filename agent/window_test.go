package agent

import (
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/zap"

	"github.com/detour-dev/detour/tunnel"
)

// TestSlowReadersBufferBounded: 30 streams whose data the agent cannot pass
// on (30 slow cluster callers of an intercepted port) while the client
// keeps sending. The agent's side buffers at most its stream window per
// stream: with the 4 MiB window it had, this held ~120 MiB of the agent's
// 128 MiB limit.
func TestSlowReadersBufferBounded(t *testing.T) {
	const streams = 30
	srvConn, cliConn := net.Pipe()
	srv, cli := agentSessions(t, srvConn, cliConn)
	defer srv.Close()
	defer cli.Close()
	before := heapNow()

	var wg sync.WaitGroup
	defer wg.Wait()
	defer cli.Close()
	accepted := make(chan struct{}, streams)
	go func() {
		for {
			s, err := srv.Accept()
			if err != nil {
				return
			}
			// One read, so yamux grows the window to its maximum, then
			// nothing: a caller that stopped reading.
			if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
				return
			}
			accepted <- struct{}{}
		}
	}()
	chunk := make([]byte, 64<<10)
	for i := 0; i < streams; i++ {
		s, err := cli.Open()
		if err != nil {
			t.Fatal(err)
		}
		keepWriting(&wg, s, chunk)
	}
	for i := 0; i < streams; i++ {
		select {
		case <-accepted:
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d streams accepted", i, streams)
		}
	}
	// Wait until the senders stall: the heap stops growing.
	after := settledHeap()
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap grew by %.1f MiB for %d stalled streams (window %d KiB)", float64(grown)/(1<<20), streams, DefaultConfig().Tunnel.StreamWindow>>10)
	// yamux's receive buffer is a bytes.Buffer, which may hold twice what
	// it was given; 8 MiB for everything else.
	const limit = streams*2*(1<<20) + 8<<20
	if grown > limit {
		t.Fatalf("heap grew by %d MiB with %d stalled streams, want at most %d MiB (a 1 MiB window, twice, each)", grown>>20, streams, limit>>20)
	}
}

// keepWriting writes chunk to s until a write fails (the session closes).
func keepWriting(wg *sync.WaitGroup, s net.Conn, chunk []byte) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if _, err := s.Write(chunk); err != nil {
				return
			}
		}
	}()
}

// settledHeap waits until the heap stops growing (the senders stall) and
// returns it.
func settledHeap() runtime.MemStats {
	var after runtime.MemStats
	last := uint64(0)
	for range 50 {
		time.Sleep(100 * time.Millisecond)
		runtime.GC()
		runtime.ReadMemStats(&after)
		if after.HeapAlloc == last {
			break
		}
		last = after.HeapAlloc
	}
	return after
}

// agentSessions starts the agent's side of a session (its tunnel config)
// over srvConn and a client's over cliConn.
func agentSessions(t *testing.T, srvConn, cliConn net.Conn) (srv, cli *yamux.Session) {
	t.Helper()
	srv, err := tunnel.Server(srvConn, DefaultConfig().Tunnel, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	cli, err = tunnel.Client(cliConn, tunnel.DefaultConfig(), zap.NewNop())
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	return srv, cli
}

// heapNow collects garbage and reads the heap.
func heapNow() runtime.MemStats {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}
