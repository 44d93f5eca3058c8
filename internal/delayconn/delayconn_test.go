package delayconn

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestReadsAreDelayed: bytes arrive intact and no sooner than the delay.
func TestReadsAreDelayed(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	d := New(b, 30*time.Millisecond)
	defer d.Close()
	start := time.Now()
	go a.Write([]byte("late"))
	got := make([]byte, 4)
	if _, err := io.ReadFull(d, got); err != nil || string(got) != "late" {
		t.Fatalf("read %q, %v", got, err)
	}
	if took := time.Since(start); took < 30*time.Millisecond {
		t.Fatalf("bytes arrived after %v, want at least 30ms", took)
	}
	a.Close()
	if _, err := d.Read(got); err != io.EOF {
		t.Fatalf("after the peer closed: %v, want EOF", err)
	}
}
