package agent

import (
	"bufio"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// requestHeadSeeds are heads parseRequestHead takes, and some it leaves to
// http.ReadRequest.
var requestHeadSeeds = []string{
	"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /p/q?x=1&y=%41 HTTP/1.1\r\nHost: app:8080\r\nUser-Agent: Go-http-client/1.1\r\nAccept-Encoding: gzip\r\n\r\n",
	"POST /up HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\nx-dev:alice\r\nX-Dev: bob \r\nCookie: detour-preview=t\r\n\r\nhello",
	"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\nbaggage: k=v\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nEmpty:\r\n\r\n",
	// Left to http.ReadRequest:
	"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
	"GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX : 1\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
	"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"GET / HTTP/1.1\r\nX: a\x00b\r\nHost: a\r\n\r\n",
	"G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\r\n\r\n",
}

func TestParseRequestHeadTakesTheCommonCase(t *testing.T) {
	for i, raw := range requestHeadSeeds {
		got := checkRequestHead(t, raw)
		if want := i < 5; got != want {
			t.Errorf("%q: taken %v, want %v", raw, got, want)
		}
	}
}

// FuzzParseRequestHead: whatever head parseRequestHead takes,
// http.ReadRequest takes too, to the same request and body.
func FuzzParseRequestHead(f *testing.F) {
	for _, s := range requestHeadSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) { checkRequestHead(t, raw) })
}

// checkRequestHead compares parseRequestHead with http.ReadRequest on raw,
// and reports whether parseRequestHead took it.
func checkRequestHead(t *testing.T, raw string) bool {
	end := strings.Index(raw, "\r\n\r\n")
	if end < 0 {
		return false
	}
	br := bufio.NewReader(strings.NewReader(raw[end+4:]))
	got := parseRequestHead([]byte(raw[:end+2]), br)
	if got == nil {
		return false
	}
	want, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		t.Fatalf("%q: taken, but http.ReadRequest says %v", raw, err)
	}
	switch {
	case got.Method != want.Method || got.RequestURI != want.RequestURI || got.URL.String() != want.URL.String() ||
		got.Host != want.Host || got.ContentLength != want.ContentLength || got.Close != want.Close || got.ProtoMinor != want.ProtoMinor:
		t.Fatalf("%q: got %s %s %s host %q length %d close %v, want %s %s %s host %q length %d close %v", raw,
			got.Method, got.RequestURI, got.URL, got.Host, got.ContentLength, got.Close,
			want.Method, want.RequestURI, want.URL, want.Host, want.ContentLength, want.Close)
	case !reflect.DeepEqual(got.Header, want.Header):
		t.Fatalf("%q: header %v, want %v", raw, got.Header, want.Header)
	}
	gb, gerr := io.ReadAll(got.Body)
	wb, werr := io.ReadAll(want.Body)
	if string(gb) != string(wb) || (gerr == nil) != (werr == nil) {
		t.Fatalf("%q: body %q (%v), want %q (%v)", raw, gb, gerr, wb, werr)
	}
	return true
}
