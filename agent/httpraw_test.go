package agent

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"
	"testing"
)

func TestPeekRawResponse(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		ok        bool
		length    int64
		close     bool
	}{
		{"plain", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\napp\n", true, 4, false},
		{"close", "HTTP/1.1 404 Not Found\r\nconnection: Close\r\ncontent-length: 0\r\n\r\n", true, 0, true},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false, 0, false},
		{"no length", "HTTP/1.1 200 OK\r\nX: y\r\n\r\n", false, 0, false},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", false, 0, false},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nx", false, 0, false},
		{"trailer", "HTTP/1.1 200 OK\r\nTrailer: X\r\nContent-Length: 1\r\n\r\nx", false, 0, false},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", false, 0, false},
		{"1xx", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", false, 0, false},
		{"204", "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", false, 0, false},
		{"304", "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", false, 0, false},
		{"folded", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 1\r\n\r\nx", false, 0, false},
		{"no colon", "HTTP/1.1 200 OK\r\nX\r\nContent-Length: 1\r\n\r\nx", false, 0, false},
		{"control byte", "HTTP/1.1 200 OK\r\nX: a\x01\r\nContent-Length: 1\r\n\r\nx", false, 0, false},
		{"not whole", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n", false, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tc.raw))
			br.Peek(1)
			rr, ok := peekRawResponse(br)
			if ok != tc.ok || ok && (rr.length != tc.length || rr.close != tc.close) {
				t.Fatalf("ok %v, length %d, close %v; want %v, %d, %v", ok, rr.length, rr.close, tc.ok, tc.length, tc.close)
			}
			if br.Buffered() != len(tc.raw) {
				t.Errorf("peekRawResponse consumed %d bytes", len(tc.raw)-br.Buffered())
			}
		})
	}
}

func TestRawHeadsDropHopByHop(t *testing.T) {
	raw := "HTTP/1.1 200 OK\r\nconnection: keep-alive, X-Hop\r\nx-hop: 1\r\nKeep-Alive: timeout=5\r\nUpgrade: h2c\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\nok"
	br := bufio.NewReader(strings.NewReader(raw))
	br.Peek(1)
	rr, ok := peekRawResponse(br)
	if !ok {
		t.Fatal("not passed through")
	}
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	writeRawResponseHead(w, &rr, true)
	w.Flush()
	if want := "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nConnection: close\r\nContent-Length: 2\r\n\r\n"; b.String() != want {
		t.Errorf("response head\n%q, want\n%q", b.String(), want)
	}

	reqRaw := "POST /p?a=%zz&b=1 HTTP/1.1\r\nhost: app\r\nConnection: keep-alive, X-Hop\r\nX-HOP: 1\r\nTE: trailers\r\n" +
		"Proxy-Authorization: x\r\nx-dev: alice\r\nContent-Length: 2\r\n\r\nhi"
	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(reqRaw)))
	if err != nil {
		t.Fatal(err)
	}
	req.URL.RawQuery = cleanQuery(req.URL.RawQuery)
	head := reqRaw[:strings.Index(reqRaw, "\r\n\r\n")+2]
	b.Reset()
	writeRawRequestHead(w, req, []byte(head), connectionTokens(req.Header["Connection"]), true)
	w.Flush()
	if want := "POST /p?b=1 HTTP/1.1\r\nHost: app\r\nx-dev: alice\r\nTe: trailers\r\nContent-Length: 2\r\n\r\n"; b.String() != want {
		t.Errorf("request head\n%q, want\n%q", b.String(), want)
	}
}
