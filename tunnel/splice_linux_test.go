package tunnel

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"testing"
	"time"
)

// TestSpliceTCP: the raw splice loop copies every byte in order, reuses its
// pooled pipe only empty (each copy gets exactly its own bytes), and ends on
// a deadline or a dead destination instead of blocking.
func TestSpliceTCP(t *testing.T) {
	t.Run("copies", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range 12 {
			payload := make([]byte, i*97<<10+i) // 0 B to ~1 MiB, odd sizes
			for j := range payload {
				payload[j] = byte(rng.Uint32())
			}
			writer, src := tcpPair(t)
			dst, reader := tcpPair(t)
			go func() { writer.Write(payload); writer.Close() }()
			got := make(chan []byte, 1)
			go func() { b, _ := io.ReadAll(reader); got <- b }()
			n, err := spliceTCP(dst.(*net.TCPConn), src.(*net.TCPConn))
			if err != nil || n != int64(len(payload)) {
				t.Fatalf("copy %d: spliceTCP = %d, %v; want %d, nil", i, n, err, len(payload))
			}
			dst.Close()
			if b := <-got; !bytes.Equal(b, payload) {
				t.Fatalf("copy %d: %d bytes arrived, not the %d sent (or not in order)", i, len(b), len(payload))
			}
		}
	})
	t.Run("deadline", func(t *testing.T) {
		_, src := tcpPair(t)
		dst, _ := tcpPair(t)
		src.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		done := make(chan error, 1)
		go func() { _, err := spliceTCP(dst.(*net.TCPConn), src.(*net.TCPConn)); done <- err }()
		select {
		case err := <-done:
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("spliceTCP after the deadline: %v, want %v", err, os.ErrDeadlineExceeded)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("spliceTCP still blocked 5 s after its read deadline")
		}
	})
	t.Run("dead destination", func(t *testing.T) {
		writer, src := tcpPair(t)
		dst, reader := tcpPair(t)
		reader.(*net.TCPConn).SetLinger(0)
		reader.Close() // RST on the first bytes that reach it
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			buf := make([]byte, 64<<10)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := writer.Write(buf); err != nil {
					return
				}
			}
		}()
		done := make(chan error, 1)
		go func() { _, err := spliceTCP(dst.(*net.TCPConn), src.(*net.TCPConn)); done <- err }()
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("spliceTCP into a reset connection returned no error")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("spliceTCP into a reset connection still running after 5 s")
		}
	})
}
