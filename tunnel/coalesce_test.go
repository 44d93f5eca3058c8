package tunnel

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

func yamuxHeader(typ byte, length uint32) []byte {
	h := make([]byte, yamuxHeaderLen)
	h[1] = typ
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

func TestCoalescingConnNeverHoldsBackABodylessHeader(t *testing.T) {
	a, b := tcpPair(t)
	c := newCoalescingConn(a)

	// A window update (type 1) has no body: it must reach the peer at once.
	update := yamuxHeader(1, 4096)
	if n, err := c.Write(update); n != len(update) || err != nil {
		t.Fatalf("write = %d, %v", n, err)
	}
	got := make([]byte, yamuxHeaderLen)
	b.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := io.ReadFull(b, got); err != nil || !bytes.Equal(got, update) {
		t.Fatalf("window update held back or changed: %v %x", err, got)
	}

	// A data header waits for its body; both then arrive, in order.
	body := bytes.Repeat([]byte{7}, 1000)
	hdr := yamuxHeader(yamuxTypeData, uint32(len(body)))
	if n, err := c.Write(hdr); n != len(hdr) || err != nil {
		t.Fatalf("write header = %d, %v", n, err)
	}
	if n, err := c.Write(body); n != len(body) || err != nil {
		t.Fatalf("write body = %d, %v (want the body's own length)", n, err)
	}
	got = make([]byte, len(hdr)+len(body))
	if _, err := io.ReadFull(b, got); err != nil || !bytes.Equal(got, append(hdr, body...)) {
		t.Fatalf("frame changed on the wire: %v", err)
	}

	// A data header with length 0 (a bare FIN or SYN) has no body either.
	fin := yamuxHeader(yamuxTypeData, 0)
	c.Write(fin)
	got = make([]byte, yamuxHeaderLen)
	if _, err := io.ReadFull(b, got); err != nil || !bytes.Equal(got, fin) {
		t.Fatalf("empty data frame held back: %v", err)
	}
}

// messageConn is a transport that frames every Write as a message of its
// own (as a port-forward stream does): it records the writes.
type messageConn struct {
	writes [][]byte
}

func (m *messageConn) Read([]byte) (int, error) { return 0, io.EOF }
func (m *messageConn) Close() error             { return nil }
func (m *messageConn) Write(p []byte) (int, error) {
	m.writes = append(m.writes, bytes.Clone(p))
	return len(p), nil
}

func TestCoalescingConnJoinsHeaderAndBodyOverAMessageTransport(t *testing.T) {
	m := &messageConn{}
	c := newCoalescingConn(m)

	body := bytes.Repeat([]byte{7}, 1000)
	hdr := yamuxHeader(yamuxTypeData, uint32(len(body)))
	if n, err := c.Write(hdr); n != len(hdr) || err != nil {
		t.Fatalf("write header = %d, %v", n, err)
	}
	if len(m.writes) != 0 {
		t.Fatalf("data header written alone: %d writes", len(m.writes))
	}
	if n, err := c.Write(body); n != len(body) || err != nil {
		t.Fatalf("write body = %d, %v (want the body's own length)", n, err)
	}
	if len(m.writes) != 1 || !bytes.Equal(m.writes[0], append(bytes.Clone(hdr), body...)) {
		t.Fatalf("want header+body as one message, got %d writes", len(m.writes))
	}

	// A window update goes out at once, alone.
	update := yamuxHeader(1, 4096)
	c.Write(update)
	if len(m.writes) != 2 || !bytes.Equal(m.writes[1], update) {
		t.Fatalf("window update held back or joined: %d writes", len(m.writes))
	}

	// A body past maxJoinCopy is not copied: header, then body.
	big := bytes.Repeat([]byte{9}, maxJoinCopy+1)
	c.Write(yamuxHeader(yamuxTypeData, uint32(len(big))))
	if n, err := c.Write(big); n != len(big) || err != nil {
		t.Fatalf("write big body = %d, %v", n, err)
	}
	if len(m.writes) != 4 || len(m.writes[2]) != yamuxHeaderLen || !bytes.Equal(m.writes[3], big) {
		t.Fatalf("big body: want header and body as two writes, got %d", len(m.writes))
	}
}

func yamuxFlagged(typ byte, flags uint16, length uint32) []byte {
	h := yamuxHeader(typ, length)
	binary.BigEndian.PutUint16(h[2:4], flags)
	return h
}

func TestCoalescingConnJoinsAStreamsSetUpWithTheNextFrame(t *testing.T) {
	syn := yamuxFlagged(yamuxTypeWindowUpdate, yamuxFlagSYN, 0)
	ack := yamuxFlagged(yamuxTypeWindowUpdate, yamuxFlagACK, 0)
	body := []byte("stream header")
	hdr := yamuxHeader(yamuxTypeData, uint32(len(body)))
	update := yamuxHeader(yamuxTypeWindowUpdate, 4096)
	synFin := yamuxFlagged(yamuxTypeWindowUpdate, yamuxFlagSYN|yamuxFlagFIN, 0)
	join := func(ps ...[]byte) []byte { return bytes.Join(ps, nil) }
	for _, tc := range []struct {
		name   string
		writes [][]byte
		want   [][]byte // the messages, in order
	}{
		{"SYN, then the stream header: one message", [][]byte{syn, hdr, body}, [][]byte{join(syn, hdr, body)}},
		{"ACK, then a window update: one message", [][]byte{ack, update}, [][]byte{join(ack, update)}},
		{"several set-ups wait together", [][]byte{syn, ack, syn, hdr, body}, [][]byte{join(syn, ack, syn, hdr, body)}},
		{"SYN with FIN goes at once", [][]byte{synFin}, [][]byte{synFin}},
		{"a plain window update goes at once", [][]byte{update}, [][]byte{update}},
		{"a long body after a SYN: the SYN and header, then the body", [][]byte{syn, yamuxHeader(yamuxTypeData, maxJoinCopy+1), make([]byte, maxJoinCopy+1)},
			[][]byte{join(syn, yamuxHeader(yamuxTypeData, maxJoinCopy+1)), make([]byte, maxJoinCopy+1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &messageConn{}
			c := newCoalescingConn(m)
			c.(*coalescingConn).holdFor = time.Hour // no flush by the timer here
			for _, w := range tc.writes {
				if n, err := c.Write(w); n != len(w) || err != nil {
					t.Fatalf("write = %d, %v; want %d", n, err, len(w))
				}
			}
			c.(*coalescingConn).mu.Lock()
			got := slices.Clone(m.writes)
			c.(*coalescingConn).mu.Unlock()
			if len(got) != len(tc.want) {
				t.Fatalf("%d messages, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if !bytes.Equal(got[i], tc.want[i]) {
					t.Fatalf("message %d = %x, want %x", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestCoalescingConnSendsAHeldSetUpAlone(t *testing.T) {
	a, b := tcpPair(t)
	c := newCoalescingConn(a)
	syn := yamuxFlagged(yamuxTypeWindowUpdate, yamuxFlagSYN, 0)
	start := time.Now()
	if _, err := c.Write(syn); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, yamuxHeaderLen)
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(b, got); err != nil || !bytes.Equal(got, syn) {
		t.Fatalf("SYN with nothing after it never sent: %v %x", err, got)
	}
	if took := time.Since(start); took < holdSetup {
		t.Fatalf("SYN sent after %s, before holdSetup (%s): not held", took, holdSetup)
	}
	// Held again, then joined with a data frame over the socket.
	c.(*coalescingConn).holdFor = time.Hour
	body := []byte("x")
	for _, w := range [][]byte{syn, yamuxHeader(yamuxTypeData, 1), body} {
		c.Write(w)
	}
	want := append(append(bytes.Clone(syn), yamuxHeader(yamuxTypeData, 1)...), body...)
	got = make([]byte, len(want))
	if _, err := io.ReadFull(b, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("SYN and data frame: %v %x, want %x", err, got, want)
	}
}

func TestCoalescingConnHoldsAtMostMaxHeld(t *testing.T) {
	m := &messageConn{}
	c := newCoalescingConn(m)
	c.(*coalescingConn).holdFor = time.Hour
	syn := yamuxFlagged(yamuxTypeWindowUpdate, yamuxFlagSYN, 0)
	for i := 0; i <= maxHeld; i++ {
		c.Write(syn)
	}
	c.(*coalescingConn).mu.Lock()
	defer c.(*coalescingConn).mu.Unlock()
	if len(m.writes) != 1 || len(m.writes[0]) != (maxHeld+1)*yamuxHeaderLen {
		t.Fatalf("%d SYNs: want them all in one message once %d are held, got %d messages", maxHeld+1, maxHeld, len(m.writes))
	}
}

// recordingConn passes writes through to a socket, recording them; it
// hides the socket, so the wrapper treats it as a message transport.
type recordingConn struct {
	c      net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (r *recordingConn) Read(p []byte) (int, error) { return r.c.Read(p) }
func (r *recordingConn) Close() error               { return r.c.Close() }
func (r *recordingConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.writes = append(r.writes, bytes.Clone(p))
	r.mu.Unlock()
	return r.c.Write(p)
}

func (r *recordingConn) since(i int) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.writes[i:])
}

// TestStreamOpeningIsOneMessage: over real yamux sessions, a new stream's
// SYN goes out with the stream header that follows it, and the accepting
// side's ACK with its first answer: one message each way. The hold is a
// millisecond of wall time, so a loaded machine may split a pair: the test
// wants most of 20 streams joined (none is without the hold).
func TestStreamOpeningIsOneMessage(t *testing.T) {
	a, b := tcpPair(t)
	ra, rb := &recordingConn{c: a}, &recordingConn{c: b}
	srv, err := Server(ra, DefaultConfig(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := Client(rb, DefaultConfig(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	const streams = 20
	opened, answered := 0, 0
	for i := 0; i < streams; i++ {
		before, beforeB := len(ra.since(0)), len(rb.since(0))
		st, err := srv.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteStreamHeader(st, StreamIntercepted, InterceptedHeader{Intercept: "web", Port: 80}); err != nil {
			t.Fatal(err)
		}
		in, err := cli.AcceptStream()
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := ReadStreamHeader(in); err != nil {
			t.Fatal(err)
		}
		if _, err := in.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(st, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		if w := ra.since(before); len(w) == 1 && isSetupHeader(w[0][:yamuxHeaderLen]) {
			opened++
		}
		if w := rb.since(beforeB); len(w) == 1 && isSetupHeader(w[0][:yamuxHeaderLen]) {
			answered++
		}
		st.Close()
		in.Close()
	}
	if opened < streams/2 || answered < streams/2 {
		t.Fatalf("of %d streams, %d opened with their header in one message and %d accepted with the first answer; want most", streams, opened, answered)
	}
	t.Logf("of %d streams, %d opened in one message, %d accepted and answered in one", streams, opened, answered)
}
