package tunnel

import (
	"errors"
	"time"
)

// ProtocolVersion is the control protocol spoken by this build. A peer that
// sends another version in its hello is refused with CodeVersionMismatch.
const ProtocolVersion uint16 = 1

// Control frame types (spec.md, "Control frames").
type FrameType uint8

const (
	FrameHello           FrameType = 0x01 // client → agent
	FrameHelloAck        FrameType = 0x02 // agent → client
	FrameCreateIntercept FrameType = 0x03 // client → agent
	FrameRemoveIntercept FrameType = 0x04 // client → agent
	FrameListIntercepts  FrameType = 0x05 // client → agent
	FrameInterceptList   FrameType = 0x06 // agent → client (reply to create/remove/list)
	FramePing            FrameType = 0x07 // either side
	FramePong            FrameType = 0x08 // either side
	FrameError           FrameType = 0x09 // either side, reply to any request
	FrameGetEnvironment  FrameType = 0x0A // client → agent
	FrameEnvironment     FrameType = 0x0B // agent → client
	FrameGetNetwork      FrameType = 0x0C // client → agent
	FrameNetwork         FrameType = 0x0D // agent → client
	FrameExpectProbe     FrameType = 0x0E // client → agent
	FrameProbeArmed      FrameType = 0x0F // agent → client
)

// Service probes (spec.md, "expect-probe"): what a prober writes on a
// connection to the Service and what an agent armed with its token
// answers. ProbeAnswer ends with a newline too.
const (
	ProbePrefix = "DETOUR-PROBE "
	ProbeAnswer = "DETOUR-PROBE-OK\n"
	// MaxProbeTTL bounds how long an agent stays armed for one token.
	MaxProbeTTL = 30 * time.Second
	// ProbePeekWait is how long an armed agent waits for a new
	// connection's first bytes to tell a probe from a client (one that
	// waits for the server to speak first is delayed by this much, only
	// while the port is armed).
	ProbePeekWait = 100 * time.Millisecond
)

// Stream kinds: the first byte of every non-control stream (spec.md, "Streams").
type StreamKind uint8

const (
	StreamIntercepted StreamKind = 0x01 // agent → client: an intercepted connection
	StreamDialPod     StreamKind = 0x02 // client → agent: dial a pod-local port
	StreamDial        StreamKind = 0x03 // client → agent: dial a cluster destination from the pod (TCP or UDP)
	StreamDNS         StreamKind = 0x04 // client → agent: DNS queries answered with the pod's resolvers
	// StreamMirrored: agent → client: a copy of one connection's client→app
	// bytes for a tcp-mirror, in chunks (WriteMirrorChunk).
	StreamMirrored StreamKind = 0x05

	lastStreamKind = StreamMirrored
)

// Dial results: the agent's one-byte answer on a StreamDialPod stream.
const (
	DialOK      uint8 = 0x00
	DialRefused uint8 = 0x01 // nothing listens on the pod-local port
	DialDenied  uint8 = 0x02 // the port or destination is not allowed
	// DialUnreachable: the destination did not answer in time, or no
	// route leads there (StreamDial only).
	DialUnreachable uint8 = 0x03
)

// ErrorCode says why a request failed; it travels in FrameError.
type ErrorCode uint16

const (
	CodeBadRequest             ErrorCode = 1
	CodeVersionMismatch        ErrorCode = 2
	CodeHelloRequired          ErrorCode = 3
	CodePortNotServed          ErrorCode = 4
	CodeAlreadyIntercepted     ErrorCode = 5
	CodeInterceptNotFound      ErrorCode = 6
	CodeUnsupportedMechanism   ErrorCode = 7
	CodeInternal               ErrorCode = 8
	CodeShuttingDown           ErrorCode = 9
	CodeInterceptNameConflicts ErrorCode = 10
	CodeAppNotHTTP             ErrorCode = 11

	// lastCode is the highest code; CodeOf and the tests walk up to it.
	lastCode = CodeAppNotHTTP
)

// Mechanisms an intercept may use.
const (
	MechanismTCP = "tcp"
	// MechanismHTTP routes single requests, those whose headers match,
	// and shares the port with other http intercepts and the app.
	MechanismHTTP = "http"
	// MechanismTCPMirror sends the workstation a copy of every connection
	// to the port (its client→app bytes) while the app, or whoever
	// intercepts it, keeps answering. Any number share a port.
	MechanismTCPMirror = "tcp-mirror"
	// MechanismHTTPMirror sends the workstation a copy of every request
	// that matches its rules (headers, method, path) while the app, or
	// the intercept the request matches, keeps answering. Any number
	// share a port, with http intercepts too.
	MechanismHTTPMirror = "http-mirror"
)

// Mechanisms is every mechanism the built-in agent supports.
var Mechanisms = []string{MechanismTCP, MechanismHTTP, MechanismTCPMirror, MechanismHTTPMirror}

// IsMirror says whether mechanism copies traffic rather than taking it.
func IsMirror(mechanism string) bool {
	return mechanism == MechanismTCPMirror || mechanism == MechanismHTTPMirror
}

// Bounds on what a peer may make us allocate.
const (
	controlHeaderLen = 9 // type u8, request id u32, payload length u32

	// MaxControlPayload bounds one control frame's payload. The largest
	// legitimate frame is an intercept list; 1 MiB holds thousands.
	MaxControlPayload = 1 << 20

	// MaxStreamHeader bounds a stream header's JSON payload (a u16 length
	// already caps it at 64 KiB; real headers are under 200 bytes).
	MaxStreamHeader = 4 << 10

	// MaxNameLen bounds intercept names, client ids and user@host strings.
	MaxNameLen = 253

	// MaxDatagram bounds one UDP datagram on a StreamDial udp stream (the
	// u16 length prefix caps it; IPv4 UDP payloads are at most 65,507).
	MaxDatagram = 65535

	// MaxDNSMessage bounds one DNS message on a StreamDNS stream (DNS over
	// TCP's own u16 length prefix).
	MaxDNSMessage = 65535

	// MaxDialReason bounds the reason an agent gives for a failed dial.
	MaxDialReason = 1024

	// MaxMirrorChunk bounds one chunk of a StreamMirrored stream.
	MaxMirrorChunk = 256 << 10

	// MaxMirrorBody bounds the body of a request an http-mirror copies: a
	// request with a longer body is answered as always but not copied
	// (counted as dropped). Copies are whole requests or nothing.
	MaxMirrorBody = 1 << 20
)

// Timing defaults (see DefaultConfig for why).
const (
	DefaultKeepAliveInterval = 5 * time.Second
	DefaultWriteTimeout      = 10 * time.Second
	DefaultStreamWindow      = 4 << 20
)

// Sentinel errors. A RemoteError returned by a peer matches the sentinel of
// its code through errors.Is.
var (
	ErrBadRequest             = errors.New("bad request")
	ErrVersionMismatch        = errors.New("protocol version mismatch")
	ErrHelloRequired          = errors.New("hello required before any other request")
	ErrPortNotServed          = errors.New("port not served by this agent")
	ErrAlreadyIntercepted     = errors.New("port already intercepted")
	ErrInterceptNotFound      = errors.New("intercept not found")
	ErrUnsupportedMechanism   = errors.New("unsupported mechanism")
	ErrInternal               = errors.New("internal agent error")
	ErrShuttingDown           = errors.New("agent shutting down")
	ErrInterceptNameConflicts = errors.New("intercept name already used for another port")
	ErrAppNotHTTP             = errors.New("app does not speak HTTP on this port")

	ErrFrameTooLarge    = errors.New("frame too large")
	ErrUnknownFrameType = errors.New("unknown frame type")
	ErrUnknownStream    = errors.New("unknown stream kind")
	ErrSessionClosed    = errors.New("tunnel session closed")
	// ErrMirrorCut: a mirrored stream ended without its end chunk: the
	// agent cut the copy off because the workstation fell behind.
	ErrMirrorCut = errors.New("mirrored connection cut off: the workstation fell behind")

	// Dial outcomes (StreamDial), from the agent's status byte.
	ErrDialRefused     = errors.New("connection refused by the destination")
	ErrDialDenied      = errors.New("destination not allowed")
	ErrDialUnreachable = errors.New("destination unreachable")
)

var codeErrors = map[ErrorCode]error{
	CodeBadRequest:             ErrBadRequest,
	CodeVersionMismatch:        ErrVersionMismatch,
	CodeHelloRequired:          ErrHelloRequired,
	CodePortNotServed:          ErrPortNotServed,
	CodeAlreadyIntercepted:     ErrAlreadyIntercepted,
	CodeInterceptNotFound:      ErrInterceptNotFound,
	CodeUnsupportedMechanism:   ErrUnsupportedMechanism,
	CodeInternal:               ErrInternal,
	CodeShuttingDown:           ErrShuttingDown,
	CodeInterceptNameConflicts: ErrInterceptNameConflicts,
	CodeAppNotHTTP:             ErrAppNotHTTP,
}
