package tunnel

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tcpPair returns the two ends of a real loopback TCP connection.
func tcpPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	dialed, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	other := <-accepted
	if other == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { dialed.Close(); other.Close() })
	return dialed, other
}

// yamuxPair returns the two ends of one stream in a yamux session over TCP.
func yamuxPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	a, b := tcpPair(t)
	log := zaptest.NewLogger(t)
	srv, err := Server(a, DefaultConfig(), log)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := Client(b, DefaultConfig(), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close(); srv.Close() })
	opened, err := cli.Open()
	if err != nil {
		t.Fatal(err)
	}
	// yamux announces a stream with its first frame; write nothing yet and
	// accept: the SYN goes out with the window update on open.
	acc, err := srv.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return opened, acc
}

// TestJoinHalfClose: a client that sends its request and shuts its write side
// must still receive the whole reply, through every kind of hop Join links.
func TestJoinHalfClose(t *testing.T) {
	hops := map[string]func(testing.TB) (net.Conn, net.Conn){
		"tcp":   tcpPair,
		"yamux": yamuxPair,
	}
	for name, hop := range hops {
		t.Run(name, func(t *testing.T) {
			// client ⇄ [c1 | Join | c2] ⇄ server, where c1/c2 are the far
			// ends of two hops of the given kind.
			client, c1 := tcpPair(t)
			c2, server := hop(t)
			done := make(chan [2]int64, 1)
			go func() {
				a, b := Join(c1, c2)
				done <- [2]int64{a, b}
			}()

			request := bytes.Repeat([]byte("q"), 1<<20)
			reply := bytes.Repeat([]byte("r"), 3<<20)
			go func() {
				got, _ := io.ReadAll(server) // until the client's half-close
				if !bytes.Equal(got, request) {
					t.Errorf("server got %d bytes, want %d", len(got), len(request))
				}
				server.Write(reply)
				closeWrite(server)
			}()

			if _, err := client.Write(request); err != nil {
				t.Fatal(err)
			}
			client.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(client)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, reply) {
				t.Fatalf("client got %d bytes, want %d", len(got), len(reply))
			}
			counts := <-done
			if counts[0] != int64(len(request)) || counts[1] != int64(len(reply)) {
				t.Fatalf("Join counted %v, want [%d %d]", counts, len(request), len(reply))
			}
		})
	}
}

// TestJoinResetEndsBothSides: when one side dies, Join returns rather than
// leaving the other copy blocked forever.
func TestJoinResetEndsBothSides(t *testing.T) {
	client, c1 := tcpPair(t)
	c2, server := tcpPair(t)
	done := make(chan struct{})
	go func() { Join(c1, c2); close(done) }()
	client.(*net.TCPConn).SetLinger(0)
	client.Close() // RST
	<-done
	if _, err := server.Read(make([]byte, 1)); err == nil {
		t.Fatal("server side still open after client reset")
	}
}

func TestConfigVerify(t *testing.T) {
	good := DefaultConfig()
	if err := good.Verify(); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*Config){
		"keepalive": func(c *Config) { c.KeepAliveInterval = 0 },
		"timeout":   func(c *Config) { c.WriteTimeout = -1 },
		"window":    func(c *Config) { c.StreamWindow = 1024 },
		"backlog":   func(c *Config) { c.AcceptBacklog = 0 },
	} {
		c := DefaultConfig()
		mutate(&c)
		if err := c.Verify(); err == nil {
			t.Errorf("%s: bad config accepted", name)
		}
	}
}

// TestJoinResetThroughYamuxUnblocksTheOtherSide: a reset on the TCP side
// must end a Join whose other side is a yamux stream whose peer stays
// silent; Close on a yamux stream alone only sends FIN.
func TestJoinResetThroughYamuxUnblocksTheOtherSide(t *testing.T) {
	client, c1 := tcpPair(t)
	c2, _ := yamuxPair(t) // the far end never writes or closes
	done := make(chan struct{})
	go func() { Join(c1, c2); close(done) }()
	client.(*net.TCPConn).SetLinger(0)
	client.Close()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Join still blocked 2s after one side was reset")
	}
}
