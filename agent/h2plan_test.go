package agent

import (
	"bufio"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/detour-dev/detour/tunnel"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// fields builds a header list: name, value, name, value…
func fields(kv ...string) []hpack.HeaderField {
	var out []hpack.HeaderField
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

var h2GET = []string{":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/p?q=1"}

func TestH2RequestShape(t *testing.T) {
	for _, tc := range []struct {
		name string
		kv   []string
		want handOffReason
	}{
		{"GET", h2GET, proxyHere},
		{"gRPC", []string{":method", "POST", ":scheme", "http", ":path", "/pkg.Svc/M", "content-type", "application/grpc", "te", "trailers"}, proxyHere},
		{"no :authority (allowed)", []string{":method", "GET", ":scheme", "http", ":path", "/"}, proxyHere},
		{"CONNECT", []string{":method", "CONNECT", ":authority", "a:1"}, handOffProto},
		{"extended CONNECT", []string{":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":path", "/ws"}, handOffProto},
		{":protocol alone", []string{":method", "GET", ":protocol", "websocket", ":scheme", "http", ":path", "/ws"}, handOffUpgrade},
		{"no :method", []string{":scheme", "http", ":path", "/"}, handOffHeaders},
		{"no :scheme", []string{":method", "GET", ":path", "/"}, handOffHeaders},
		{"no :path", []string{":method", "GET", ":scheme", "http"}, handOffHeaders},
		{"asterisk path", []string{":method", "OPTIONS", ":scheme", "http", ":path", "*"}, handOffHeaders},
		{"connection", append(h2GET, "connection", "close"), handOffHeaders},
		{"keep-alive", append(h2GET, "keep-alive", "5"), handOffHeaders},
		{"proxy-connection", append(h2GET, "proxy-connection", "x"), handOffHeaders},
		{"transfer-encoding", append(h2GET, "transfer-encoding", "chunked"), handOffHeaders},
		{"upgrade", append(h2GET, "upgrade", "websocket"), handOffHeaders},
		{"te gzip", append(h2GET, "te", "gzip"), handOffHeaders},
		{"te trailers", append(h2GET, "te", "trailers"), proxyHere},
	} {
		if got := h2RequestShape(fields(tc.kv...)); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// ruleState is a port with one http intercept whose header rules are rules.
func ruleState(t testing.TB, rules ...string) *portState {
	return &portState{http: []*intercept{httpIC(t, "web", nil, rules...)}}
}

// TestH2MatchRequest: the request the relay routes by reads as the one
// net/http's server would hand ServeHTTP, for what matchRequest looks at.
func TestH2MatchRequest(t *testing.T) {
	st := ruleState(t, "x-dev=alice", "baggage:k=v", "X-Team=blue")
	for _, tc := range []struct {
		kv  []string
		raw string // the same request in HTTP/1.1
	}{
		{h2GET, "GET /p?q=1 HTTP/1.1\r\nHost: a\r\n\r\n"},
		{[]string{":method", "POST", ":scheme", "http", ":authority", "a", ":path", "/a%20b/c?x=%41&detour-preview=t",
			"x-dev", "alice", "baggage", "k=v", "cookie", "a=1", "cookie", "detour-preview=tok", "x-dev", "bob", "x-team", "blue", "x-other", "1"},
			"POST /a%20b/c?x=%41&detour-preview=t HTTP/1.1\r\nHost: a\r\nX-Dev: alice\r\nBaggage: k=v\r\nCookie: a=1\r\nCookie: detour-preview=tok\r\nX-Dev: bob\r\nX-Team: blue\r\nX-Other: 1\r\n\r\n"},
		{[]string{":method", "GET", ":scheme", "http", ":path", "//x/y:z#f"}, "GET //x/y:z#f HTTP/1.1\r\nHost: \r\n\r\n"},
	} {
		got := h2MatchRequest(nil, fields(tc.kv...), st)
		want, err := http.ReadRequest(bufio.NewReader(strings.NewReader(tc.raw)))
		if err != nil {
			t.Fatal(err)
		}
		if got == nil {
			t.Fatalf("%v: nil", tc.kv)
		}
		delete(want.Header, "X-Other") // no rule reads it
		if len(want.Header) == 0 {
			want.Header = nil // none to keep
		}
		if got.Method != want.Method || got.Host != want.Host || got.URL.Path != want.URL.Path || got.URL.RawQuery != want.URL.RawQuery || !reflect.DeepEqual(got.Header, want.Header) {
			t.Errorf("%v:\n got %s %s %q %q %v\nwant %s %s %q %q %v", tc.kv, got.Method, got.Host, got.URL.Path, got.URL.RawQuery, got.Header,
				want.Method, want.Host, want.URL.Path, want.URL.RawQuery, want.Header)
		}
		gc, _ := got.Cookie(tunnel.PreviewCookie)
		wc, _ := want.Cookie(tunnel.PreviewCookie)
		if (gc == nil) != (wc == nil) || gc != nil && gc.Value != wc.Value {
			t.Errorf("%v: preview cookie %v, want %v", tc.kv, gc, wc)
		}
		for _, st := range []*portState{st, ruleState(t, "x-dev=alice"), nil} {
			gi, ga := matchRequest(st, got)
			wi, wa := matchRequest(st, want)
			if gi != wi || ga != wa {
				t.Errorf("%v: matchRequest differs from net/http's request's", tc.kv)
			}
		}
	}
	if r := h2MatchRequest(nil, fields(":method", "GET", ":scheme", "http", ":path", "/%zz"), st); r != nil {
		t.Errorf("unparsable path: %v, want nil (net/http answers it)", r.URL)
	}
	// Reused, it keeps nothing of the request before.
	var into h2MatchReq
	h2MatchRequest(&into, fields(":method", "POST", ":scheme", "http", ":path", "/a?b", "x-dev", "alice", "cookie", "c=1"), st)
	r := h2MatchRequest(&into, fields(h2GET...), st)
	if r.Method != "GET" || r.URL.Path != "/p" || r.URL.RawQuery != "q=1" || len(r.Header) != 0 {
		t.Errorf("reused: %s %v %v", r.Method, r.URL, r.Header)
	}
	r = h2MatchRequest(&into, fields(":method", "GET", ":scheme", "http", ":path", "/plain"), st)
	if r.URL.Path != "/plain" || r.URL.RawQuery != "" || len(r.Header) != 0 {
		t.Errorf("reused: %v %v", r.URL, r.Header)
	}
}

func FuzzH2MatchRequest(f *testing.F) {
	f.Add("/p?q=1", "x-dev", "alice")
	f.Add("/a%20b?detour-preview=x", "cookie", "detour-preview=t; a=b")
	f.Add("//x/y:z#f", "X-Dev", "bob")
	st := ruleState(f, "x-dev=alice")
	f.Fuzz(func(t *testing.T, path, name, value string) {
		name = strings.ToLower(name) // the Framer refuses other field names
		r := h2MatchRequest(nil, fields(":method", "GET", ":scheme", "http", ":path", path, name, value), st)
		u, err := url.ParseRequestURI(path)
		if (r == nil) != (err != nil) {
			t.Fatalf("path %q: request %v, parse error %v", path, r, err)
		}
		if r == nil {
			return
		}
		if r.URL.Path != u.Path || r.URL.RawQuery != u.RawQuery {
			t.Fatalf("path %q: %q %q, want %q %q", path, r.URL.Path, r.URL.RawQuery, u.Path, u.RawQuery)
		}
		got := r.Header[http.CanonicalHeaderKey(name)]
		if name == "x-dev" || name == "cookie" {
			if len(got) != 1 || got[0] != value {
				t.Fatalf("field %q: %q", name, got)
			}
		} else if len(r.Header) != 0 {
			t.Fatalf("field %q, which no rule reads: kept as %v", name, r.Header)
		}
		_, _ = matchRequest(st, r)
	})
}

func TestH2RouteShape(t *testing.T) {
	h2c, h1, h2tls := httpProtocol{h2: true}, httpProtocol{}, httpProtocol{h2: true, tls: true}
	for _, tc := range []struct {
		armed, mirrored bool
		to              httpProtocol
		want            handOffReason
	}{
		{false, false, h2c, proxyHere},
		{true, false, h2c, handOffPreview},
		{false, true, h2c, handOffMirror},
		{false, false, h1, handOffBackend},
		{false, false, h2tls, handOffBackend},
	} {
		if got := h2RouteShape(tc.armed, tc.mirrored, tc.to); got != tc.want {
			t.Errorf("armed %v mirrored %v to %v: %q, want %q", tc.armed, tc.mirrored, tc.to, got, tc.want)
		}
	}
	for p, want := range map[httpProtocol]bool{h2c: true, h1: false, h2tls: false, {tls: true}: false} {
		if got := h2cRelayed(p); got != want {
			t.Errorf("h2cRelayed(%v) = %v, want %v", p, got, want)
		}
	}
}

func TestH2Ack(t *testing.T) {
	const w = 1 << 20
	for _, tc := range []struct {
		unacked int64
		want    uint32
	}{{0, 0}, {-5, 0}, {1, 0}, {w/4 - 1, 0}, {w / 4, w / 4}, {w, w}, {1 << 40, 1<<31 - 1}} {
		if got := h2Ack(tc.unacked, w); got != tc.want {
			t.Errorf("h2Ack(%d) = %d, want %d", tc.unacked, got, tc.want)
		}
	}
	// Whatever it holds back leaves the peer at least three quarters of
	// the window to send: it never waits for an acknowledgment.
	for unacked := int64(0); unacked <= w; unacked += 997 {
		if h2Ack(unacked, w) == 0 && w-unacked < 3*w/4 {
			t.Fatalf("unacked %d held back: the peer has only %d left", unacked, w-unacked)
		}
	}
}

func TestSniffH2C(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
		err  bool
	}{
		{http2.ClientPreface + "\x00\x00\x00\x04", true, false},
		{http2.ClientPreface, true, false},
		{"POST / HTTP/1.1\r\n", false, false},
		{"PUT / HTTP/1.1\r\nHost: a\r\n\r\n", false, false},
		{"PRI * HTTP/1.1\r\n", false, false},
		{"PROPFIND / HTTP/1.1\r\n", false, false},
		{"PRI * HTTP/2.0", false, true}, // cut short
	} {
		// One byte per read: the sniffer must not wait for more than it needs.
		got, err := sniffH2C(bufio.NewReaderSize(&oneByteReader{s: tc.in}, 64))
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("%q: %v, %v; want %v (error %v)", tc.in, got, err, tc.want, tc.err)
		}
	}
}

type oneByteReader struct{ s string }

func (r *oneByteReader) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, io.EOF
	}
	p[0] = r.s[0]
	r.s = r.s[1:]
	return 1, nil
}
