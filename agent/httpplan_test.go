package agent

import (
	"bufio"
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestRequestShape(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  string
		want handOffReason
	}{
		{"plain GET", "GET / HTTP/1.1\r\nHost: a\r\nX-Dev: alice\r\n\r\n", proxyHere},
		{"POST with a body", "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi", proxyHere},
		{"chunked upload", "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", proxyHere},
		{"HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\n\r\n", handOffProto},
		{"h2c preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", handOffProto},
		{"CONNECT", "CONNECT other:443 HTTP/1.1\r\nHost: other:443\r\n\r\n", handOffProto},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", handOffHost},
		{"invalid Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", handOffHost},
		{"Expect", "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx", handOffExpect},
		{"WebSocket", "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", handOffUpgrade},
		{"Connection: upgrade alone", "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, upgrade\r\n\r\n", handOffUpgrade},
		{"keep-alive", "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", proxyHere},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(tc.raw)))
			if err != nil {
				t.Fatal(err)
			}
			if got := requestShape(r); got != tc.want {
				t.Errorf("requestShape = %q, want %q", got, tc.want)
			}
		})
	}
	// Two Host lines: http.ReadRequest refuses them itself, and the loop
	// hands what it cannot parse to net/http's server (400).
	if _, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET / HTTP/1.1\r\nHost: a\r\nHOST: b\r\n\r\n"))); err == nil {
		t.Error("ReadRequest took two Host lines")
	}
	// A header value net/http's server refuses (ReadRequest takes it).
	r := &http.Request{ProtoMajor: 1, ProtoMinor: 1, Host: "a", Header: http.Header{"X-Bad": {"a\x00b"}}}
	if got := requestShape(r); got != handOffHeaders {
		t.Errorf("NUL in a value: %q, want %q", got, handOffHeaders)
	}
}

func TestRouteShape(t *testing.T) {
	for _, tc := range []struct {
		armed, mirrored bool
		to              httpProtocol
		want            handOffReason
	}{
		{false, false, httpProtocol{}, proxyHere},
		{true, false, httpProtocol{}, handOffPreview},
		{false, true, httpProtocol{}, handOffMirror},
		{false, false, httpProtocol{h2: true}, handOffBackend},
		{false, false, httpProtocol{tls: true}, handOffBackend},
		{false, false, httpProtocol{tls: true, h2: true}, handOffBackend},
	} {
		if got := routeShape(tc.armed, tc.mirrored, tc.to); got != tc.want {
			t.Errorf("routeShape(armed %v, mirrored %v, %s) = %q, want %q", tc.armed, tc.mirrored, tc.to, got, tc.want)
		}
	}
}

func TestOutboundHeaderAndHead(t *testing.T) {
	raw := "GET /p?a=1&b=%zz HTTP/1.1\r\nHost: app\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nTe: trailers, deflate\r\n" +
		"Keep-Alive: 5\r\nProxy-Authorization: x\r\nX-Forwarded-For: 10.0.0.1\r\nX-Dev: alice\r\n\r\n"
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	outboundHeader(r)
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	writeRequestHead(w, r)
	w.Flush()
	sent := b.String()
	got, err := http.ReadRequest(bufio.NewReader(&b))
	if err != nil {
		t.Fatalf("%q: %v", sent, err)
	}
	want := http.Header{"Te": {"trailers"}, "X-Forwarded-For": {"10.0.0.1"}, "X-Dev": {"alice"}}
	if len(got.Header) != len(want) || got.Host != "app" || got.RequestURI != "/p?a=1" {
		t.Errorf("sent %q: host %q, URI %q, header %v; want app, /p?a=1, %v", sent, got.Host, got.RequestURI, got.Header, want)
	}
	for k, v := range want {
		if got.Header.Get(k) != v[0] {
			t.Errorf("%s: %q, want %q", k, got.Header.Get(k), v[0])
		}
	}
}

func TestCleanQuery(t *testing.T) {
	for in, want := range map[string]string{
		"":          "",
		"a=1&b=2":   "a=1&b=2",
		"a=1;b=2":   "", // one pair, with a ';': dropped, as by ReverseProxy
		"a=1&b=2;c": "a=1",
		"a=%zz&b=2": "b=2",
		"a=%41":     "a=%41",
	} {
		if got := cleanQuery(in); got != want {
			t.Errorf("cleanQuery(%q) = %q, want %q", in, got, want)
		}
	}
	if _, err := url.ParseQuery(cleanQuery("x=1;y")); err != nil {
		t.Error(err)
	}
}

func TestCopyBodyChunkedWithTrailer(t *testing.T) {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	if err := copyBody(w, strings.NewReader("hello"), nil, true); err != nil {
		t.Fatal(err)
	}
	writeTrailer(w, http.Header{"X-Sum": {"42"}})
	w.Flush()
	if want := "5\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\n"; b.String() != want {
		t.Errorf("%q, want %q", b.String(), want)
	}
}
