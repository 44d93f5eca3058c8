package tunnel

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"unicode"
	"unicode/utf8"
)

// Frame is one control message: a type, the id of the request it belongs to
// (a reply carries its request's id), and a JSON payload.
type Frame struct {
	Type    FrameType
	ID      uint32
	Payload []byte
}

// NewFrame builds a frame whose payload is v encoded as JSON.
func NewFrame(t FrameType, id uint32, v any) (Frame, error) {
	payload, err := json.Marshal(v)
	if err != nil {
		return Frame{}, fmt.Errorf("encode %s payload: %w", t, err)
	}
	if len(payload) > MaxControlPayload {
		return Frame{}, fmt.Errorf("encode %s payload of %d bytes: %w", t, len(payload), ErrFrameTooLarge)
	}
	return Frame{Type: t, ID: id, Payload: payload}, nil
}

// Decode unmarshals the payload into v. Unknown fields are ignored so that a
// newer peer may add optional fields without a version bump.
func (f Frame) Decode(v any) error {
	if err := json.Unmarshal(f.Payload, v); err != nil {
		return fmt.Errorf("decode %s payload: %w: %w", f.Type, ErrBadRequest, err)
	}
	return nil
}

// WriteFrame writes f in one Write call, so concurrent writers that serialise
// on a mutex around WriteFrame never interleave frames.
func WriteFrame(w io.Writer, f Frame) error {
	if len(f.Payload) > MaxControlPayload {
		return fmt.Errorf("write %s frame: %w", f.Type, ErrFrameTooLarge)
	}
	buf := make([]byte, controlHeaderLen+len(f.Payload))
	buf[0] = byte(f.Type)
	binary.BigEndian.PutUint32(buf[1:5], f.ID)
	binary.BigEndian.PutUint32(buf[5:9], uint32(len(f.Payload)))
	copy(buf[controlHeaderLen:], f.Payload)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("write %s frame: %w", f.Type, err)
	}
	return nil
}

// ReadFrame reads one control frame. The length field is checked against
// MaxControlPayload before anything is allocated, and unknown frame types
// are rejected, so a hostile or confused peer cannot make us allocate
// more than MaxControlPayload or act on a frame we do not understand.
func ReadFrame(r io.Reader) (Frame, error) {
	var hdr [controlHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Frame{}, err // io.EOF on a clean close, for callers to tell apart
	}
	f := Frame{Type: FrameType(hdr[0]), ID: binary.BigEndian.Uint32(hdr[1:5])}
	if !f.Type.valid() {
		return Frame{}, fmt.Errorf("read frame type 0x%02x: %w", hdr[0], ErrUnknownFrameType)
	}
	n := binary.BigEndian.Uint32(hdr[5:9])
	if n > MaxControlPayload {
		return Frame{}, fmt.Errorf("read %s frame of %d bytes (limit %d): %w", f.Type, n, MaxControlPayload, ErrFrameTooLarge)
	}
	f.Payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.Payload); err != nil {
		return Frame{}, fmt.Errorf("read %s payload: %w", f.Type, noEOF(err))
	}
	return f, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (t FrameType) valid() bool { return t >= FrameHello && t <= FrameProbeArmed }

func (t FrameType) String() string {
	switch t {
	case FrameHello:
		return "hello"
	case FrameHelloAck:
		return "hello-ack"
	case FrameCreateIntercept:
		return "create-intercept"
	case FrameRemoveIntercept:
		return "remove-intercept"
	case FrameListIntercepts:
		return "list-intercepts"
	case FrameInterceptList:
		return "intercept-list"
	case FramePing:
		return "ping"
	case FramePong:
		return "pong"
	case FrameError:
		return "error"
	case FrameGetEnvironment:
		return "get-environment"
	case FrameEnvironment:
		return "environment"
	case FrameGetNetwork:
		return "get-network"
	case FrameNetwork:
		return "network"
	case FrameExpectProbe:
		return "expect-probe"
	case FrameProbeArmed:
		return "probe-armed"
	}
	return fmt.Sprintf("frame(0x%02x)", uint8(t))
}

// Hello opens a session: the client's protocol version and who it is.
type Hello struct {
	Version  uint16 `json:"version"`
	ClientID string `json:"clientId"`
	User     string `json:"user"` // user@host, shown to others who collide with us
	// Secret proves which client this is: random, known only to the
	// client (its daemon), at least MinSecretLen bytes. The agent keeps
	// only its SHA-256 and hands an intercept over (a reconnect) only to
	// a session with the same secret; clientId and user are labels.
	Secret string `json:"secret"`
}

// MinSecretLen is the shortest hello secret an agent accepts (32 random
// bytes, hex-encoded).
const MinSecretLen = 64

// HelloAck accepts a session and tells the client what the agent serves.
type HelloAck struct {
	Version      uint16     `json:"version"`
	AgentVersion string     `json:"agentVersion"`
	Pod          string     `json:"pod,omitempty"`
	Namespace    string     `json:"namespace,omitempty"`
	Ports        []PortInfo `json:"ports"`
	// Features lists requests added after version 1 that this agent
	// answers (FeatureExpectProbe); a client does not send them to an
	// agent that does not list them (it would close the session).
	Features []string `json:"features,omitempty"`
}

// FeatureExpectProbe: the agent answers expect-probe.
const FeatureExpectProbe = "expect-probe"

// HasFeature says whether the agent announced feature.
func (h HelloAck) HasFeature(feature string) bool {
	for _, f := range h.Features {
		if f == feature {
			return true
		}
	}
	return false
}

// PortInfo is one application port the agent can intercept.
type PortInfo struct {
	Port       uint16   `json:"port"`
	Mechanisms []string `json:"mechanisms"`
}

// CreateIntercept asks for the traffic of one application port.
type CreateIntercept struct {
	Name      string `json:"name"`
	Port      uint16 `json:"port"`
	Mechanism string `json:"mechanism"`
	// Args are the mechanism's settings, from an extension's CLI flags
	// (--http-match x=y becomes {"match": ["x=y"]}); tcp takes none.
	Args map[string][]string `json:"args,omitempty"`
}

// RemoveIntercept gives an intercept back.
type RemoveIntercept struct {
	Name string `json:"name"`
}

// ListIntercepts asks for every intercept on the agent (all clients').
type ListIntercepts struct{}

// InterceptList answers create, remove and list with the agent's intercepts.
type InterceptList struct {
	Intercepts []InterceptInfo `json:"intercepts"`
}

// InterceptInfo describes one active intercept.
type InterceptInfo struct {
	Name      string `json:"name"`
	Port      uint16 `json:"port"`
	Mechanism string `json:"mechanism"`
	Holder    string `json:"holder"` // user@host of the owning client (a label: anyone may claim any)
	// Yours is true for the asking session's own intercepts: the only
	// proof of holding one (no client's identity is published).
	Yours bool `json:"yours,omitempty"`
	// Match lists an http intercept's header rules as NAME=VALUE.
	Match []string `json:"match,omitempty"`
	// Methods and Path are an http intercept's method and path rules:
	// Path as KIND=VALUE (path-equal=/x, path-prefix=/api/, path-regex=…).
	Methods []string `json:"methods,omitempty"`
	Path    string   `json:"path,omitempty"`
	// AppProtocol is what the agent speaks to the app on an http
	// intercept's port: http/1.1, h2c, https or https+h2.
	AppProtocol string `json:"appProtocol,omitempty"`
	// MirrorCopied and MirrorDropped count a mirror's copies since it was
	// created: requests (http-mirror) or connections (tcp-mirror) sent
	// whole, and those dropped (never partly sent, or, for a connection,
	// cut off) because the workstation fell behind or a body was too long.
	MirrorCopied  uint64 `json:"mirrorCopied,omitempty"`
	MirrorDropped uint64 `json:"mirrorDropped,omitempty"`
}

// GetEnvironment asks for the app container's environment.
type GetEnvironment struct{}

// Environment is the app container's environment as the agent sees it:
// the webhook gives the agent a copy of the app's env and envFrom, so
// values from ConfigMaps and Secrets arrive resolved by the kubelet.
type Environment struct {
	Env map[string]string `json:"env"`
}

// Ping and Pong carry nothing; the reply's id matches the ping's.
type Ping struct{}
type Pong struct{}

// ExpectProbe arms the agent for probes of an app port: for TTLMillis
// (at most MaxProbeTTL) a new connection to Port whose first bytes are
// ProbePrefix, Token and a newline is answered ProbeAnswer and closed,
// not routed.
type ExpectProbe struct {
	Port      uint16 `json:"port"`
	Token     string `json:"token"`
	TTLMillis int64  `json:"ttlMs"`
}

// ProbeArmed is the agent's reply to ExpectProbe.
type ProbeArmed struct{}

// ErrorPayload is the body of FrameError.
type ErrorPayload struct {
	Code    ErrorCode `json:"code"`
	Message string    `json:"message"`
}

var mechanismPattern = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

var namePattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)

// Validate checks the fields a hello must have. The labels (client id,
// user) reach other developers' terminals in messages and lists, so they
// must be printable: no escape sequences, no control characters.
func (h Hello) Validate() error {
	if h.ClientID == "" || len(h.ClientID) > MaxNameLen || !Printable(h.ClientID) {
		return fmt.Errorf("hello: client id must be 1..%d printable bytes: %w", MaxNameLen, ErrBadRequest)
	}
	if h.User == "" || len(h.User) > MaxNameLen || !Printable(h.User) {
		return fmt.Errorf("hello: user must be 1..%d printable bytes (no control characters): %w", MaxNameLen, ErrBadRequest)
	}
	if len(h.Secret) < MinSecretLen || len(h.Secret) > MaxNameLen {
		return fmt.Errorf("hello: secret must be %d..%d bytes (a detour client older than this agent sends none: upgrade it): %w", MinSecretLen, MaxNameLen, ErrBadRequest)
	}
	return nil
}

// Printable reports whether s is valid UTF-8 made of printable characters
// only (letters, marks, numbers, punctuation, symbols and the ASCII space).
func Printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// Validate checks an intercept request's name, port and mechanism.
func (c CreateIntercept) Validate() error {
	if err := ValidateName(c.Name); err != nil {
		return err
	}
	if c.Port == 0 {
		return fmt.Errorf("intercept %q: port must be 1..65535: %w", c.Name, ErrBadRequest)
	}
	if !mechanismPattern.MatchString(c.Mechanism) {
		return fmt.Errorf("intercept %q: mechanism %q: use lower-case letters, digits and '-': %w", c.Name, c.Mechanism, ErrBadRequest)
	}
	return nil
}

// ValidateName checks an intercept name: letters, digits, '.', '_' and '-',
// starting and ending with a letter or digit, at most MaxNameLen bytes.
func ValidateName(name string) error {
	if len(name) == 0 || len(name) > MaxNameLen || !namePattern.MatchString(name) {
		return fmt.Errorf("intercept name %q: use 1..%d letters, digits, '.', '_' or '-', starting and ending with a letter or digit: %w", name, MaxNameLen, ErrBadRequest)
	}
	return nil
}

// InterceptedHeader opens an agent → client stream: one intercepted
// connection, for the intercept named, that arrived for Port from Source.
type InterceptedHeader struct {
	Intercept string `json:"intercept"`
	Port      uint16 `json:"port"`
	Source    string `json:"source"` // ip:port of the original client
}

// DialPodHeader opens a client → agent stream to a pod-local port.
type DialPodHeader struct {
	Port uint16 `json:"port"`
}

// Validate checks an intercepted-stream header.
func (h InterceptedHeader) Validate() error {
	if err := ValidateName(h.Intercept); err != nil {
		return err
	}
	if h.Port == 0 {
		return fmt.Errorf("intercepted stream: port 0: %w", ErrBadRequest)
	}
	if h.Source != "" {
		if _, err := netip.ParseAddrPort(h.Source); err != nil {
			return fmt.Errorf("intercepted stream: source %q: %w", h.Source, ErrBadRequest)
		}
	}
	return nil
}

// WriteStreamHeader writes the kind byte, a u16 length and v as JSON.
func WriteStreamHeader(w io.Writer, kind StreamKind, v any) error {
	payload, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode stream header: %w", err)
	}
	if len(payload) > MaxStreamHeader {
		return fmt.Errorf("stream header of %d bytes: %w", len(payload), ErrFrameTooLarge)
	}
	buf := make([]byte, 3+len(payload))
	buf[0] = byte(kind)
	binary.BigEndian.PutUint16(buf[1:3], uint16(len(payload)))
	copy(buf[3:], payload)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("write stream header: %w", err)
	}
	return nil
}

// ReadStreamHeader reads a stream's kind and its JSON header, bounded by
// MaxStreamHeader. Decode the payload with DecodeStreamHeader.
func ReadStreamHeader(r io.Reader) (StreamKind, []byte, error) {
	var hdr [3]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, fmt.Errorf("read stream header: %w", noEOF(err))
	}
	kind := StreamKind(hdr[0])
	if kind < StreamIntercepted || kind > lastStreamKind {
		return 0, nil, fmt.Errorf("stream kind 0x%02x: %w", hdr[0], ErrUnknownStream)
	}
	n := binary.BigEndian.Uint16(hdr[1:3])
	if int(n) > MaxStreamHeader {
		return 0, nil, fmt.Errorf("stream header of %d bytes (limit %d): %w", n, MaxStreamHeader, ErrFrameTooLarge)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, fmt.Errorf("read stream header payload: %w", noEOF(err))
	}
	return kind, payload, nil
}

// DecodeStreamHeader unmarshals a stream header payload.
func DecodeStreamHeader(payload []byte, v any) error {
	if err := json.Unmarshal(payload, v); err != nil {
		return fmt.Errorf("decode stream header: %w: %w", ErrBadRequest, err)
	}
	return nil
}
