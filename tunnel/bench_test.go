package tunnel

import (
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/hashicorp/yamux"
	"go.uber.org/zap"
)

// BenchmarkStreamThroughput moves data one way over loopback TCP: raw, and
// through a yamux stream with and without header coalescing, at several
// stream windows. It is the measurement behind DefaultStreamWindow and
// coalescingConn (docs/benchmarks.md).
func BenchmarkStreamThroughput(b *testing.B) {
	const chunk = 256 << 10
	run := func(b *testing.B, w io.WriteCloser, r io.Reader) {
		buf := make([]byte, chunk)
		done := make(chan struct{})
		go func() {
			io.CopyBuffer(io.Discard, struct{ io.Reader }{r}, make([]byte, chunk))
			close(done)
		}()
		b.SetBytes(chunk)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := w.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		w.Close()
		<-done
	}
	b.Run("tcp", func(b *testing.B) {
		a, c := tcpPair(b)
		run(b, a.(*net.TCPConn), c)
	})
	for _, coalesce := range []bool{false, true} {
		for _, window := range []uint32{256 << 10, 1 << 20, 4 << 20, 16 << 20} {
			b.Run(fmt.Sprintf("yamux/coalesce=%v/window=%dKiB", coalesce, window>>10), func(b *testing.B) {
				a, c := tcpPair(b)
				cfg := DefaultConfig()
				cfg.StreamWindow = window
				yc, _ := cfg.yamux(zap.NewNop())
				wrap := func(x net.Conn) io.ReadWriteCloser {
					if coalesce {
						return newCoalescingConn(x)
					}
					return x
				}
				cli, _ := yamux.Client(wrap(a), yc)
				srv, _ := yamux.Server(wrap(c), yc)
				defer cli.Close()
				defer srv.Close()
				st, err := cli.OpenStream()
				if err != nil {
					b.Fatal(err)
				}
				acc, err := srv.AcceptStream()
				if err != nil {
					b.Fatal(err)
				}
				run(b, st, acc)
			})
		}
	}
}
