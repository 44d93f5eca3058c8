package tunnel

import (
	"bytes"
	"testing"
)

// FuzzReadControlFrame feeds arbitrary bytes to the control-frame decoder:
// it must never panic, never allocate past MaxControlPayload, and every
// frame it accepts must survive a write/read round trip unchanged.
func FuzzReadControlFrame(f *testing.F) {
	for _, seed := range [][]byte{
		rawFrame(byte(FrameHello), 1, 2, []byte("{}")),
		rawFrame(byte(FrameCreateIntercept), 9, 39, []byte(`{"name":"a","port":80,"mechanism":"tcp"}`)),
		rawFrame(0xff, 0, 0xffffffff, nil),
		{},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := ReadFrame(bytes.NewReader(data))
		if err != nil {
			return
		}
		if len(fr.Payload) > MaxControlPayload {
			t.Fatalf("accepted payload of %d bytes", len(fr.Payload))
		}
		var buf bytes.Buffer
		if err := WriteFrame(&buf, fr); err != nil {
			t.Fatalf("re-encode accepted frame: %v", err)
		}
		again, err := ReadFrame(&buf)
		if err != nil || again.Type != fr.Type || again.ID != fr.ID || !bytes.Equal(again.Payload, fr.Payload) {
			t.Fatalf("round trip changed the frame: %+v vs %+v (%v)", again, fr, err)
		}
		// Decoding into every payload type must not panic either.
		for _, v := range []any{&Hello{}, &HelloAck{}, &CreateIntercept{}, &RemoveIntercept{}, &InterceptList{}, &ErrorPayload{}} {
			if fr.Decode(v) == nil {
				switch p := v.(type) {
				case *Hello:
					_ = p.Validate()
				case *CreateIntercept:
					_ = p.Validate()
				}
			}
		}
	})
}

// FuzzReadStreamHeader does the same for stream headers.
func FuzzReadStreamHeader(f *testing.F) {
	f.Add([]byte{byte(StreamIntercepted), 0, 2, '{', '}'})
	f.Add([]byte{byte(StreamDialPod), 0, 12, '{', '"', 'p', 'o', 'r', 't', '"', ':', '8', '0', '}', ' '})
	f.Add([]byte{byte(StreamDial), 0, 40, '{', '"', 'n', 'e', 't', 'w', 'o', 'r', 'k', '"', ':', '"', 'u', 'd', 'p', '"', ',', '"', 'a', 'd', 'd', 'r', 'e', 's', 's', '"', ':', '"', '1', '.', '2', '.', '3', '.', '4', ':', '5', '3', '"', '}'})
	f.Add([]byte{0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		kind, payload, err := ReadStreamHeader(bytes.NewReader(data))
		if err != nil {
			return
		}
		if len(payload) > MaxStreamHeader {
			t.Fatalf("accepted header of %d bytes", len(payload))
		}
		var ih InterceptedHeader
		var dh DialPodHeader
		switch kind {
		case StreamIntercepted, StreamMirrored:
			if DecodeStreamHeader(payload, &ih) == nil {
				_ = ih.Validate()
			}
		case StreamDialPod:
			_ = DecodeStreamHeader(payload, &dh)
		case StreamDial:
			var h DialHeader
			if DecodeStreamHeader(payload, &h) == nil {
				_, _ = h.Validate()
			}
		case StreamDNS:
		default:
			t.Fatalf("accepted unknown kind %d", kind)
		}
	})
}
