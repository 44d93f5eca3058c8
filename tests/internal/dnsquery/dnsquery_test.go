package dnsquery

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// answer is a fake server's reply: 10.0.0.1 for known., NXDOMAIN otherwise.
func answer(t *testing.T, q []byte) []byte {
	var m dnsmessage.Message
	if err := m.Unpack(q); err != nil {
		t.Errorf("server: unpack: %v", err)
		return nil
	}
	m.Response, m.Authoritative = true, true
	if m.Questions[0].Name.String() == "known." {
		m.Answers = []dnsmessage.Resource{{
			Header: dnsmessage.ResourceHeader{Name: m.Questions[0].Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 5},
			Body:   &dnsmessage.AResource{A: [4]byte{10, 0, 0, 1}},
		}}
	} else {
		m.RCode = dnsmessage.RCodeNameError
	}
	b, err := m.Pack()
	if err != nil {
		t.Errorf("server: pack: %v", err)
	}
	return b
}

func serveUDP(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(answer(t, buf[:n]), from)
		}
	}()
	return pc.LocalAddr().String()
}

func serveTCP(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			var n [2]byte
			if _, err := io.ReadFull(c, n[:]); err == nil {
				q := make([]byte, binary.BigEndian.Uint16(n[:]))
				if _, err := io.ReadFull(c, q); err == nil {
					a := answer(t, q)
					_, _ = c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(a))), a...))
				}
			}
			c.Close()
		}
	}()
	return l.Addr().String()
}

func TestQuery(t *testing.T) {
	servers := map[string]string{"udp": serveUDP(t), "tcp": serveTCP(t)}
	for network, addr := range servers {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := Query(ctx, network, addr, "known", dnsmessage.TypeA)
		if err != nil || r.RCodeName() != "NOERROR" || !r.Authoritative || !slices.Equal(r.Answers, []string{"10.0.0.1"}) {
			t.Errorf("%s known: %+v, %v", network, r, err)
		}
		r, err = Query(ctx, network, addr, "unknown.example.", dnsmessage.TypeA)
		if err != nil || r.RCodeName() != "NXDOMAIN" || len(r.Answers) != 0 {
			t.Errorf("%s unknown: %+v, %v", network, r, err)
		}
		cancel()
	}
}

func TestReverseName(t *testing.T) {
	for in, want := range map[string]string{
		"10.215.0.10": "10.0.215.10.in-addr.arpa.",
		"2001:db8::1": "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
	} {
		if got, err := ReverseName(in); err != nil || got != want {
			t.Errorf("ReverseName(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ReverseName("not-an-ip"); err == nil {
		t.Error("ReverseName accepted not-an-ip")
	}
}
