package tunnel

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"
	"time"
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
