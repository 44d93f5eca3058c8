package tunnel

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestDialHeaderValidate(t *testing.T) {
	cases := []struct {
		h    DialHeader
		want string // the destination, or "" for a bad request
	}{
		{DialHeader{Network: "tcp", Address: "10.96.0.1:443"}, "10.96.0.1:443"},
		{DialHeader{Network: "udp", Address: "[fd00::5]:53"}, "[fd00::5]:53"},
		{DialHeader{Network: "tcp", Address: "[::ffff:10.0.0.1]:80"}, "10.0.0.1:80"}, // mapped addresses are unmapped: one rule per address
		{DialHeader{Network: "tcp", Address: "db.shop:5432"}, ""},                    // names are resolved by the client
		{DialHeader{Network: "tcp", Address: "10.0.0.1:0"}, ""},
		{DialHeader{Network: "sctp", Address: "10.0.0.1:80"}, ""},
		{DialHeader{Network: "tcp", Address: ""}, ""},
	}
	for _, c := range cases {
		got, err := c.h.Validate()
		if c.want == "" {
			if !errors.Is(err, ErrBadRequest) {
				t.Errorf("%+v: err = %v, want ErrBadRequest", c.h, err)
			}
			continue
		}
		if err != nil || got.String() != c.want {
			t.Errorf("%+v: got %v, %v; want %s", c.h, got, err, c.want)
		}
	}
}

func TestDialResultRoundTrip(t *testing.T) {
	cases := []struct {
		status uint8
		reason string
		want   error
	}{
		{DialOK, "", nil},
		{DialRefused, "10.0.0.9:5432: connection refused", ErrDialRefused},
		{DialDenied, "169.254.169.254 is a link-local address", ErrDialDenied},
		{DialUnreachable, "", ErrDialUnreachable},
	}
	for _, c := range cases {
		var buf bytes.Buffer
		if err := WriteDialResult(&buf, c.status, c.reason); err != nil {
			t.Fatal(err)
		}
		buf.WriteString("payload")
		err := ReadDialResult(&buf)
		if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Fatalf("status %d: err = %v, want %v", c.status, err, c.want)
		}
		if c.reason != "" && !strings.Contains(err.Error(), c.reason) {
			t.Fatalf("reason lost: %v", err)
		}
		if rest := buf.String(); rest != "payload" {
			t.Fatalf("result read consumed %q", rest)
		}
	}
	var buf bytes.Buffer
	_ = WriteDialResult(&buf, DialDenied, strings.Repeat("x", 5000))
	if buf.Len() != 3+MaxDialReason {
		t.Fatalf("long reason not cut: %d bytes", buf.Len())
	}
	if err := ReadDialResult(bytes.NewReader([]byte{0x07, 0, 0})); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("unknown status: %v", err)
	}
	if err := ReadDialResult(bytes.NewReader([]byte{DialDenied, 0xff, 0xff})); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized reason: %v", err)
	}
}

func TestMessagesRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	msgs := [][]byte{{}, []byte("one datagram"), bytes.Repeat([]byte{7}, MaxDatagram)}
	for _, m := range msgs {
		if err := WriteMessage(&buf, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteMessage(&buf, make([]byte, MaxDatagram+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized write: %v", err)
	}
	rb := make([]byte, MaxDatagram)
	for _, m := range msgs {
		got, err := ReadMessage(&buf, rb)
		if err != nil || !bytes.Equal(got, m) {
			t.Fatalf("got %d bytes, %v; want %d", len(got), err, len(m))
		}
	}
	if _, err := ReadMessage(&buf, rb); err != io.EOF {
		t.Fatalf("end: %v, want io.EOF", err)
	}
	if _, err := ReadMessage(bytes.NewReader([]byte{0, 9, 1}), rb); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated: %v", err)
	}
	if _, err := ReadMessage(bytes.NewReader([]byte{0, 9}), make([]byte, 4)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("small buffer: %v", err)
	}
}

// TestDialHeaderRefusesOtherAddressForms: the agent judges an address as
// netip parses it, so every other spelling a resolver or a URL parser
// would accept (inet_aton's decimal, octal and hex forms, names, ports out
// of range, other networks) must be a bad request, never an address.
func TestDialHeaderRefusesOtherAddressForms(t *testing.T) {
	for _, h := range []DialHeader{
		{Network: "tcp", Address: "2852039166:80"},          // 169.254.169.254 as one decimal number
		{Network: "tcp", Address: "0251.0376.0251.0376:80"}, // octal
		{Network: "tcp", Address: "0xa9.0xfe.0xa9.0xfe:80"}, // hex
		{Network: "tcp", Address: "0xa9fea9fe:80"},
		{Network: "tcp", Address: "169.254.43518:80"}, // inet_aton's a.b.c16
		{Network: "tcp", Address: "169.254.169.254.:80"},
		{Network: "tcp", Address: "169.254.169.254"},       // no port
		{Network: "tcp", Address: "169.254.169.254:65536"}, // port out of range
		{Network: "tcp", Address: "169.254.169.254:-1"},    // negative port
		{Network: "tcp", Address: "169.254.169.254:0x50"},  // hex port
		{Network: "tcp", Address: "metadata.google.internal:80"},
		{Network: "tcp", Address: "[169.254.169.254]:80"},
		{Network: "tcp", Address: " 10.0.0.1:80"},
		{Network: "tcp4", Address: "10.0.0.1:80"},
		{Network: "ip", Address: "10.0.0.1:80"},
		{Network: "unix", Address: "/var/run/docker.sock"},
		{Network: "TCP", Address: "10.0.0.1:80"},
	} {
		if got, err := h.Validate(); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%+v: got %v, %v; want ErrBadRequest", h, got, err)
		}
	}
	if _, err := (DialHeader{Network: "tcp", Address: "10.0.0.1:65535"}).Validate(); err != nil {
		t.Fatalf("port 65535: %v", err)
	}
}
