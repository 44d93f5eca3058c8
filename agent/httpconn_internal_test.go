package agent

import (
	"bufio"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// slowConn gives a part of a head, then times out, as a connection whose
// caller stopped sending meets the loop's header deadline.
type slowConn struct {
	net.Conn
	part []byte
}

func (c *slowConn) Read(p []byte) (int, error) {
	if len(c.part) > 0 {
		n := copy(p, c.part)
		c.part = c.part[n:]
		return n, nil
	}
	return 0, &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
}

func (c *slowConn) SetReadDeadline(time.Time) error { return nil }

// TestReadRequestEndsAHeadCutByTheDeadline: a head still incomplete at
// the header deadline ends the connection, as net/http's server does. It
// was handed to net/http's server whenever http.ReadRequest reported the
// cut head as malformed rather than the timeout (a partial field line),
// which then waited its own 30 s header timeout for the rest.
func TestReadRequestEndsAHeadCutByTheDeadline(t *testing.T) {
	for _, part := range []string{
		"G",
		"GET / HT",
		"GET / HTTP/1.1\r\nHo",
		"GET / HTTP/1.1\r\nHost: x\r\nX-A: aa",
		"GET / HTTP/1.1\r\nHost: x\r\n",
	} {
		hc := &h1Conn{c: &slowConn{part: []byte(part)}}
		hc.rec.r = hc.c
		hc.br = bufio.NewReader(&hc.rec)
		_, err := hc.readRequest()
		var ne net.Error
		if errors.Is(err, errHandOff) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("%q cut by the deadline: %v, want the timeout (the connection ends)", part, err)
		}
	}
}
