package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	cases := []struct {
		typ FrameType
		id  uint32
		v   any
	}{
		{FrameHello, 1, Hello{Version: ProtocolVersion, ClientID: "c1", User: "alice@laptop", Secret: secret}},
		{FrameHelloAck, 1, HelloAck{Version: 1, AgentVersion: "dev", Ports: []PortInfo{{Port: 8080, Mechanisms: []string{"tcp"}}}}},
		{FrameCreateIntercept, 2, CreateIntercept{Name: "hello", Port: 8080, Mechanism: "tcp"}},
		{FrameRemoveIntercept, 3, RemoveIntercept{Name: "hello"}},
		{FrameListIntercepts, 4, ListIntercepts{}},
		{FrameInterceptList, 4, InterceptList{Intercepts: []InterceptInfo{{Name: "a", Port: 1, Mechanism: "tcp", Holder: "bob@h", Yours: true}}}},
		{FramePing, 5, Ping{}},
		{FramePong, 5, Pong{}},
		{FrameError, 6, ErrorPayload{Code: CodeAlreadyIntercepted, Message: "taken"}},
		{FrameGetEnvironment, 7, GetEnvironment{}},
		{FrameEnvironment, 7, Environment{Env: map[string]string{"DB_URL": "postgres://db"}}},
	}
	for _, c := range cases {
		t.Run(c.typ.String(), func(t *testing.T) {
			f, err := NewFrame(c.typ, c.id, c.v)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := WriteFrame(&buf, f); err != nil {
				t.Fatal(err)
			}
			got, err := ReadFrame(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if got.Type != c.typ || got.ID != c.id || !bytes.Equal(got.Payload, f.Payload) {
				t.Fatalf("got %+v, want %+v", got, f)
			}
			if buf.Len() != 0 {
				t.Fatalf("%d bytes left after one frame", buf.Len())
			}
		})
	}
}

func rawFrame(typ byte, id uint32, length uint32, payload []byte) []byte {
	b := []byte{typ}
	b = binary.BigEndian.AppendUint32(b, id)
	b = binary.BigEndian.AppendUint32(b, length)
	return append(b, payload...)
}

func TestReadFrameRejectsBadInput(t *testing.T) {
	cases := []struct {
		name  string
		input []byte
		want  error
	}{
		{"empty", nil, io.EOF},
		{"short header", []byte{1, 0, 0}, io.ErrUnexpectedEOF},
		{"unknown type", rawFrame(0x7f, 1, 2, []byte("{}")), ErrUnknownFrameType},
		{"type zero", rawFrame(0x00, 1, 2, []byte("{}")), ErrUnknownFrameType},
		{"length over limit", rawFrame(byte(FrameHello), 1, MaxControlPayload+1, nil), ErrFrameTooLarge},
		{"length 4 GiB", rawFrame(byte(FrameHello), 1, 0xffffffff, nil), ErrFrameTooLarge},
		{"truncated payload", rawFrame(byte(FrameHello), 1, 10, []byte("{}")), io.ErrUnexpectedEOF},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ReadFrame(bytes.NewReader(c.input))
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
}

func TestDecodeRejectsGarbagePayload(t *testing.T) {
	f := Frame{Type: FrameHello, Payload: []byte("not json")}
	var h Hello
	if err := f.Decode(&h); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("err = %v, want ErrBadRequest", err)
	}
}

func TestWriteFrameRefusesOversizedPayload(t *testing.T) {
	f := Frame{Type: FrameHello, Payload: make([]byte, MaxControlPayload+1)}
	if err := WriteFrame(io.Discard, f); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v, want ErrFrameTooLarge", err)
	}
	if _, err := NewFrame(FrameError, 1, ErrorPayload{Message: strings.Repeat("x", MaxControlPayload)}); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("NewFrame err = %v, want ErrFrameTooLarge", err)
	}
}

// secret is a hello secret of the shortest accepted length.
var secret = strings.Repeat("ab", MinSecretLen/2)

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"good hello", Hello{Version: 1, ClientID: "c", User: "u@h", Secret: secret}.Validate(), nil},
		{"hello with a non-ASCII user", Hello{Version: 1, ClientID: "c", User: "zoë@hôte", Secret: secret}.Validate(), nil},
		{"hello without client id", Hello{Version: 1, User: "u@h", Secret: secret}.Validate(), ErrBadRequest},
		{"hello without user", Hello{Version: 1, ClientID: "c", Secret: secret}.Validate(), ErrBadRequest},
		{"hello without secret", Hello{Version: 1, ClientID: "c", User: "u@h"}.Validate(), ErrBadRequest},
		{"hello with a short secret", Hello{Version: 1, ClientID: "c", User: "u@h", Secret: "s3cret"}.Validate(), ErrBadRequest},
		{"user with an escape sequence", Hello{Version: 1, ClientID: "c", User: "\x1b]0;pwned\x07alice@laptop", Secret: secret}.Validate(), ErrBadRequest},
		{"user with a newline", Hello{Version: 1, ClientID: "c", User: "alice\nbob", Secret: secret}.Validate(), ErrBadRequest},
		{"client id with a C1 control", Hello{Version: 1, ClientID: "c\u009b31m", User: "u@h", Secret: secret}.Validate(), ErrBadRequest},
		{"user not UTF-8", Hello{Version: 1, ClientID: "c", User: "\xff@h", Secret: secret}.Validate(), ErrBadRequest},
		{"good intercept", CreateIntercept{Name: "hello-ns", Port: 80, Mechanism: "tcp"}.Validate(), nil},
		{"empty name", CreateIntercept{Port: 80, Mechanism: "tcp"}.Validate(), ErrBadRequest},
		{"name with slash", CreateIntercept{Name: "a/b", Port: 80, Mechanism: "tcp"}.Validate(), ErrBadRequest},
		{"name too long", CreateIntercept{Name: strings.Repeat("a", MaxNameLen+1), Port: 80, Mechanism: "tcp"}.Validate(), ErrBadRequest},
		{"port zero", CreateIntercept{Name: "a", Mechanism: "tcp"}.Validate(), ErrBadRequest},
		{"extension mechanism is the agent's call", CreateIntercept{Name: "a", Port: 80, Mechanism: "http"}.Validate(), nil},
		{"no mechanism", CreateIntercept{Name: "a", Port: 80}.Validate(), ErrBadRequest},
		{"good stream header", InterceptedHeader{Intercept: "a", Port: 80, Source: "10.1.2.3:5555"}.Validate(), nil},
		{"bad source", InterceptedHeader{Intercept: "a", Port: 80, Source: "nope"}.Validate(), ErrBadRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.want == nil && c.err != nil {
				t.Fatalf("unexpected error %v", c.err)
			}
			if c.want != nil && !errors.Is(c.err, c.want) {
				t.Fatalf("err = %v, want %v", c.err, c.want)
			}
		})
	}
}

func TestStreamHeaderRoundTripAndBounds(t *testing.T) {
	var buf bytes.Buffer
	in := InterceptedHeader{Intercept: "hello", Port: 8080, Source: "10.0.0.7:41000"}
	if err := WriteStreamHeader(&buf, StreamIntercepted, in); err != nil {
		t.Fatal(err)
	}
	buf.WriteString("raw bytes follow")
	kind, payload, err := ReadStreamHeader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var out InterceptedHeader
	if err := DecodeStreamHeader(payload, &out); err != nil {
		t.Fatal(err)
	}
	if kind != StreamIntercepted || out != in {
		t.Fatalf("got %v %+v", kind, out)
	}
	if rest := buf.String(); rest != "raw bytes follow" {
		t.Fatalf("header read consumed raw bytes: %q left", rest)
	}

	bad := []struct {
		name  string
		input []byte
		want  error
	}{
		{"unknown kind", []byte{0x09, 0, 2, '{', '}'}, ErrUnknownStream},
		{"over limit", []byte{byte(StreamDialPod), 0xff, 0xff}, ErrFrameTooLarge},
		{"truncated", []byte{byte(StreamDialPod), 0, 10, '{'}, io.ErrUnexpectedEOF},
		{"empty", nil, io.ErrUnexpectedEOF},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := ReadStreamHeader(bytes.NewReader(c.input))
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
}

func TestErrorFrameCarriesCodeAndMessage(t *testing.T) {
	err := fmt.Errorf("port 8080 is already intercepted by alice@laptop: %w", ErrAlreadyIntercepted)
	got := AsError(ErrorFrame(7, err))
	if !errors.Is(got, ErrAlreadyIntercepted) {
		t.Fatalf("%v does not match ErrAlreadyIntercepted", got)
	}
	if !strings.Contains(got.Error(), "alice@laptop") {
		t.Fatalf("message lost: %q", got)
	}
}
