package tunnel

import (
	"bytes"
	"errors"
	"testing"
)

// TestMirrorChunksEndWholeOrCut: chunks come back as written; the end
// chunk says the copy is whole; a stream that stops between chunks, or
// inside one, is a cut, never a clean end; an oversized length is refused
// before anything is allocated.
func TestMirrorChunksEndWholeOrCut(t *testing.T) {
	var stream []byte
	stream = AppendMirrorChunk(stream, []byte("GET / HTTP/1.1\r\n"))
	stream = AppendMirrorChunk(stream, []byte("\r\n"))
	whole := AppendMirrorChunk(bytes.Clone(stream), nil)
	buf := make([]byte, MaxMirrorChunk)

	r := bytes.NewReader(whole)
	var got []byte
	for {
		chunk, end, err := ReadMirrorChunk(r, buf)
		if err != nil {
			t.Fatalf("whole stream: %v", err)
		}
		if end {
			break
		}
		got = append(got, chunk...)
	}
	if string(got) != "GET / HTTP/1.1\r\n\r\n" {
		t.Fatalf("got %q", got)
	}

	for name, cut := range map[string][]byte{
		"between chunks": stream,
		"inside a chunk": stream[:len(stream)-1],
	} {
		r := bytes.NewReader(cut)
		var err error
		for err == nil {
			var end bool
			_, end, err = ReadMirrorChunk(r, buf)
			if end {
				t.Fatalf("%s: read as a whole copy", name)
			}
		}
		if name == "between chunks" && !errors.Is(err, ErrMirrorCut) {
			t.Fatalf("%s: %v, want ErrMirrorCut", name, err)
		}
	}

	huge := []byte{0xff, 0xff, 0xff, 0xff}
	if _, _, err := ReadMirrorChunk(bytes.NewReader(huge), buf); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized chunk: %v, want ErrFrameTooLarge", err)
	}
}

// TestHTTPMirrorArgs: a mirror's rules are all optional; a preview token
// is refused (a mirror routes nothing); bad rules are refused as for http.
func TestHTTPMirrorArgs(t *testing.T) {
	if s, err := ParseHTTPMirrorArgs(nil); err != nil || len(s.Match) != 0 || s.Strategy != StrategyHTTP2Probe {
		t.Fatalf("no rules: %+v, %v", s, err)
	}
	if _, err := ParseHTTPArgs(nil); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("an http intercept without a header rule: %v, want bad request", err)
	}
	s, err := ParseHTTPMirrorArgs(map[string][]string{ArgMethod: {"post"}, ArgPathPrefix: {"/api/"}})
	if err != nil || s.Methods[0] != "POST" || s.Path.Value != "/api/" {
		t.Fatalf("method and path: %+v, %v", s, err)
	}
	for _, bad := range []map[string][]string{
		{ArgPreviewToken: {"0123456789abcdef"}},
		{ArgMatch: {"no-equals"}},
		{"nonsense": {"x"}},
	} {
		if _, err := ParseHTTPMirrorArgs(bad); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%v: %v, want bad request", bad, err)
		}
	}
}
