package delayconn

import (
	"io"
	"net"
	"testing"
	"time"
)

// Conn is a net.Conn whose reads deliver the peer's bytes delay after
// they arrived.
type Conn struct {
	net.Conn
	ch   chan chunk
	rest []byte
}

type chunk struct {
	due  time.Time
	data []byte
}

// New wraps c; the pump ends when c's reads do (its close).
func New(c net.Conn, delay time.Duration) *Conn {
	d := &Conn{Conn: c, ch: make(chan chunk, 1<<14)}
	go func() {
		defer close(d.ch)
		for {
			buf := make([]byte, 64<<10)
			n, err := c.Read(buf)
			if n > 0 {
				d.ch <- chunk{time.Now().Add(delay), buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	return d
}

// Read returns bytes that are due, waiting for them.
func (d *Conn) Read(p []byte) (int, error) {
	if len(d.rest) == 0 {
		c, ok := <-d.ch
		if !ok {
			return 0, io.EOF
		}
		time.Sleep(time.Until(c.due))
		d.rest = c.data
	}
	n := copy(p, d.rest)
	d.rest = d.rest[n:]
	return n, nil
}

// Pair returns the two ends of a loopback TCP connection, each reading
// delay late (the round trip is twice it); Cleanup closes them.
func Pair(tb testing.TB, delay time.Duration) (*Conn, *Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	b := <-accepted
	if b == nil {
		a.Close()
		tb.Fatal("accept failed")
	}
	tb.Cleanup(func() { a.Close(); b.Close() })
	return New(a, delay), New(b, delay)
}
