package wan

import (
	"io"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/detour-dev/detour/tests/internal/nsworld"
)

// TestLineDelaysOnlyItsPort: a TCP round trip to the delayed port takes at
// least twice the delay (each way); one to another port does not, and
// bytes cross unchanged.
func TestLineDelaysOnlyItsPort(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, TUN)")
	}
	const delayed, other = 16443, 16444
	l, err := Start("dwan-test", delayed)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Set(25*time.Millisecond, 0)
	for _, port := range []int{delayed, other} {
		ln, err := net.Listen("tcp", net.JoinHostPort(HostAddr, itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { io.Copy(c, c); c.Close() }()
			}
		}()
	}
	rtt := func(port int) time.Duration {
		c, err := nsworld.Dial(t.Context(), "dwan-test", net.JoinHostPort(HostAddr, itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		msg := []byte("across the line")
		best := time.Hour
		for i := 0; i < 5; i++ {
			start := time.Now()
			c.Write(msg)
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil || string(got) != string(msg) {
				t.Fatalf("echo via port %d: %q %v", port, got, err)
			}
			best = min(best, time.Since(start))
		}
		return best
	}
	l.ResetStats()
	if d := rtt(delayed); d < 50*time.Millisecond {
		t.Fatalf("round trip on the delayed port %v, want ≥ 50ms", d)
	}
	// The SYN, its answer and five echoes each way at least.
	if s := l.Stats(); s.ToHost < 6 || s.ToNS < 6 || s.LateP50() <= 0 || s.LateP50() > 25*time.Millisecond {
		t.Fatalf("line stats after 5 echoes: %d packets to the host, %d to the namespace, late p50 %v", s.ToHost, s.ToNS, s.LateP50())
	}
	time.Sleep(100 * time.Millisecond) // the first connection's FINs cross
	l.ResetStats()
	if d := rtt(other); d > 25*time.Millisecond {
		t.Fatalf("round trip on another port %v, want no delay", d)
	}
	if s := l.Stats(); s.ToHost+s.ToNS != 0 {
		t.Fatalf("another port's packets counted as delayed: %+v", s)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
