package agent

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestSniffConnReturnsWhatItRead: on a real loopback connection, both
// kinds of 'P' connection come back with exactly the bytes the sniff took
// off the socket, in order, so the loop or the relay that serves them
// sees the stream whole.
func TestSniffConnReturnsWhatItRead(t *testing.T) {
	for _, tc := range []struct {
		in   string
		h2c  bool
		rest string // written after the sniff returned
	}{
		{"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n", false, "abc"},
		{"PUT / HTTP/1.1\r\n", false, "Host: a\r\n\r\n"},
		{http2.ClientPreface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00", true, "\x00\x00\x00\x04\x01\x00\x00\x00\x00"},
	} {
		client, server := tcpPair(t)
		if _, err := io.WriteString(client, tc.in); err != nil {
			t.Fatal(err)
		}
		h2c, read, err := sniffConn(server, 5*time.Second)
		if err != nil || h2c != tc.h2c {
			t.Fatalf("%q: h2c %v, %v; want %v", tc.in, h2c, err, tc.h2c)
		}
		if !bytes.HasPrefix([]byte(tc.in), read) || len(read) == 0 {
			t.Fatalf("%q: returned %q, not a prefix of what was sent", tc.in, read)
		}
		if _, err := io.WriteString(client, tc.rest); err != nil {
			t.Fatal(err)
		}
		client.Close()
		tail, err := io.ReadAll(server)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(read) + string(tail); got != tc.in+tc.rest {
			t.Errorf("%q: the connection read as %q", tc.in, got)
		}
	}
}

// TestSniffConnGivesUpOnASilentCaller: a caller that sends 'P' and
// nothing more is given up after the head's time bound; it held its
// goroutine for as long as it kept the connection open.
func TestSniffConnGivesUpOnASilentCaller(t *testing.T) {
	client, server := tcpPair(t)
	if _, err := io.WriteString(client, "P"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := sniffConn(server, 50*time.Millisecond)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("sniffing a silent caller: %v, want the deadline", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sniffing a silent caller did not give up")
	}
}

func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// replayConn reads one request again and again (the benchmark's caller).
type replayConn struct {
	net.Conn
	r *bytes.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// BenchmarkSniffHTTP1: a new HTTP/1.1 POST on a port whose app speaks h2c,
// told from the h2c preface; "pooled" is sniffConn, "fresh" the two lines
// it replaced (a new h2c-sized bufio.Reader per connection), as the
// baseline in the same run. Compare B/op.
func BenchmarkSniffHTTP1(b *testing.B) {
	req := []byte("POST /orders HTTP/1.1\r\nHost: web\r\nContent-Length: 2\r\n\r\n{}")
	b.Run("pooled", func(b *testing.B) {
		b.ReportAllocs()
		c := &replayConn{r: bytes.NewReader(req)}
		for b.Loop() {
			c.r.Reset(req)
			if h2c, read, err := sniffConn(c, time.Minute); h2c || err != nil || len(read) != len(req) {
				b.Fatal(h2c, len(read), err)
			}
		}
	})
	b.Run("fresh", func(b *testing.B) {
		b.ReportAllocs()
		c := &replayConn{r: bytes.NewReader(req)}
		for b.Loop() {
			c.r.Reset(req)
			br := bufio.NewReaderSize(c, h2IOBuffer)
			h2c, err := sniffH2C(br)
			pending, _ := br.Peek(br.Buffered())
			if read := append([]byte(nil), pending...); h2c || err != nil || len(read) != len(req) {
				b.Fatal(h2c, len(read), err)
			}
		}
	})
}
