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
