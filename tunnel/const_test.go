package tunnel

import (
	"errors"
	"testing"
)

// These values are on the wire: changing one breaks every deployed agent or
// client. If this test fails, bump ProtocolVersion and update spec.md.
func TestWireConstantsArePinned(t *testing.T) {
	pins := []struct {
		name      string
		got, want uint64
	}{
		{"ProtocolVersion", uint64(ProtocolVersion), 1},
		{"FrameHello", uint64(FrameHello), 0x01},
		{"FrameHelloAck", uint64(FrameHelloAck), 0x02},
		{"FrameCreateIntercept", uint64(FrameCreateIntercept), 0x03},
		{"FrameRemoveIntercept", uint64(FrameRemoveIntercept), 0x04},
		{"FrameListIntercepts", uint64(FrameListIntercepts), 0x05},
		{"FrameInterceptList", uint64(FrameInterceptList), 0x06},
		{"FramePing", uint64(FramePing), 0x07},
		{"FramePong", uint64(FramePong), 0x08},
		{"FrameError", uint64(FrameError), 0x09},
		{"FrameGetEnvironment", uint64(FrameGetEnvironment), 0x0A},
		{"FrameEnvironment", uint64(FrameEnvironment), 0x0B},
		{"FrameGetNetwork", uint64(FrameGetNetwork), 0x0C},
		{"FrameNetwork", uint64(FrameNetwork), 0x0D},
		{"FrameExpectProbe", uint64(FrameExpectProbe), 0x0E},
		{"FrameProbeArmed", uint64(FrameProbeArmed), 0x0F},
		{"StreamIntercepted", uint64(StreamIntercepted), 0x01},
		{"StreamDialPod", uint64(StreamDialPod), 0x02},
		{"StreamDial", uint64(StreamDial), 0x03},
		{"StreamDNS", uint64(StreamDNS), 0x04},
		{"StreamMirrored", uint64(StreamMirrored), 0x05},
		{"MaxMirrorChunk", MaxMirrorChunk, 256 << 10},
		{"MaxMirrorBody", MaxMirrorBody, 1 << 20},
		{"DialOK", uint64(DialOK), 0},
		{"DialRefused", uint64(DialRefused), 1},
		{"DialDenied", uint64(DialDenied), 2},
		{"DialUnreachable", uint64(DialUnreachable), 3},
		{"MaxDatagram", MaxDatagram, 65535},
		{"MaxDNSMessage", MaxDNSMessage, 65535},
		{"MaxDialReason", MaxDialReason, 1024},
		{"CodeBadRequest", uint64(CodeBadRequest), 1},
		{"CodeVersionMismatch", uint64(CodeVersionMismatch), 2},
		{"CodeHelloRequired", uint64(CodeHelloRequired), 3},
		{"CodePortNotServed", uint64(CodePortNotServed), 4},
		{"CodeAlreadyIntercepted", uint64(CodeAlreadyIntercepted), 5},
		{"CodeInterceptNotFound", uint64(CodeInterceptNotFound), 6},
		{"CodeUnsupportedMechanism", uint64(CodeUnsupportedMechanism), 7},
		{"CodeInternal", uint64(CodeInternal), 8},
		{"CodeShuttingDown", uint64(CodeShuttingDown), 9},
		{"CodeInterceptNameConflicts", uint64(CodeInterceptNameConflicts), 10},
		{"CodeAppNotHTTP", uint64(CodeAppNotHTTP), 11},
		{"controlHeaderLen", controlHeaderLen, 9},
		{"MaxControlPayload", MaxControlPayload, 1 << 20},
		{"MaxStreamHeader", MaxStreamHeader, 4 << 10},
		{"MaxNameLen", MaxNameLen, 253},
	}
	for _, p := range pins {
		if p.got != p.want {
			t.Errorf("%s = %#x, pinned at %#x", p.name, p.got, p.want)
		}
	}
}

func TestEveryCodeHasASentinel(t *testing.T) {
	for code := CodeBadRequest; code <= lastCode; code++ {
		sentinel, ok := codeErrors[code]
		if !ok {
			t.Fatalf("code %d has no sentinel", code)
		}
		remote := &RemoteError{Code: code, Message: "x"}
		if !errors.Is(remote, sentinel) {
			t.Errorf("RemoteError{%d} does not match %v", code, sentinel)
		}
		if got := CodeOf(sentinel); got != code {
			t.Errorf("CodeOf(%v) = %d, want %d", sentinel, got, code)
		}
	}
}
