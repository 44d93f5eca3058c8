package agent

import (
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"
)

// The decisions of the HTTP/1.1 connection loop (httpconn.go), kept apart
// from its I/O: which requests it proxies itself and which it hands, with
// the rest of their connection, to net/http's server and ReverseProxy
// (httproute.go), which serve every protocol the router supports.

// handOffReason says why the loop hands a request to net/http; "" is a
// request the loop proxies itself.
type handOffReason string

const (
	proxyHere      handOffReason = ""
	handOffProto   handOffReason = "not HTTP/1.1"            // HTTP/1.0 framing, the h2c preface (PRI * HTTP/2.0), CONNECT
	handOffHost    handOffReason = "Host missing or invalid" // net/http answers 400
	handOffHeaders handOffReason = "invalid header"          // net/http answers 400
	handOffExpect  handOffReason = "Expect"                  // 100-continue, or 417 for others
	handOffUpgrade handOffReason = "Upgrade"                 // WebSocket: relayed by ReverseProxy
	handOffPreview handOffReason = "preview link"            // sets the cookie
	handOffMirror  handOffReason = "mirrored port"           // copies taken by mirrorRequest
	handOffBackend handOffReason = "backend not HTTP/1.1"    // HTTP/2 or TLS: ReverseProxy converts (for the h2c relay: not h2c)
)

// requestShape checks what the loop needs of a request before routing it:
// HTTP/1.1 with one valid Host, valid header fields (as net/http's server
// requires, so that those it would refuse still get its answer), no
// Expect and no Upgrade (http.ReadRequest already refused more than one
// Host line), no CONNECT (its target is an authority, and a 2xx answer
// makes the connection a tunnel, never to be pooled). An Upgrade to h2c
// was already dropped (ServeHTTP answers those in HTTP/1.1 too).
func requestShape(r *http.Request) handOffReason {
	switch {
	case r.ProtoMajor != 1 || r.ProtoMinor != 1 || r.Method == http.MethodConnect:
		return handOffProto
	case r.Host == "" || !httpguts.ValidHostHeader(r.Host):
		return handOffHost
	case !validHeader(r.Header):
		return handOffHeaders
	case len(r.Header["Expect"]) > 0:
		return handOffExpect
	case len(r.Header["Upgrade"]) > 0 || httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade"):
		return handOffUpgrade
	}
	return proxyHere
}

// routeShape checks the routing outcome: the loop speaks plain HTTP/1.1
// to its backend only, and leaves preview links and mirrored ports to
// ServeHTTP.
func routeShape(armed, mirrored bool, to httpProtocol) handOffReason {
	return proxyShape(armed, mirrored, to, httpProtocol{})
}

// proxyShape is routeShape for a proxy that speaks speaks to its backend.
func proxyShape(armed, mirrored bool, to, speaks httpProtocol) handOffReason {
	switch {
	case armed:
		return handOffPreview
	case mirrored:
		return handOffMirror
	case to != speaks:
		return handOffBackend
	}
	return proxyHere
}

func validHeader(h http.Header) bool {
	for k, vv := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return false
			}
		}
	}
	return true
}

// The decisions of the h2c relay (h2relay.go): which connections it takes
// and which of their requests it passes on itself, frame by frame, rather
// than through the fallback, an internal HTTP/2 connection to the port's
// net/http server, which answers them as before (ReverseProxy).

// h2cRelayed says whether the relay takes a cleartext HTTP/2 connection
// with prior knowledge for a port whose app speaks app: only an h2c app
// can take its streams as they are. The others (an HTTP/1.1 app, TLS to
// the app) are converted by ReverseProxy, so their callers' connections go
// to net/http's server whole.
func h2cRelayed(app httpProtocol) bool { return app.h2 && !app.tls }

// h2RequestShape checks a request's HTTP/2 header fields (decoded, in
// order, pseudo-fields first, as the Framer returns them) for what the
// relay passes on unchanged: the three request pseudo-fields, no CONNECT,
// no extended CONNECT (:protocol), no connection-specific field (RFC 9113
// §8.2.2) and te only "trailers". What does not pass goes to net/http's
// server, which refuses or answers it as it always did.
func h2RequestShape(fields []hpack.HeaderField) handOffReason {
	var method, scheme, path bool
	for _, f := range fields {
		switch f.Name {
		case ":method":
			if f.Value == http.MethodConnect {
				return handOffProto
			}
			method = true
		case ":scheme":
			scheme = true
		case ":path":
			path = f.Value != "" && f.Value[0] == '/'
		case ":protocol":
			return handOffUpgrade
		case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
			return handOffHeaders
		case "te":
			if f.Value != "trailers" {
				return handOffHeaders
			}
		}
	}
	if !method || !scheme || !path {
		return handOffHeaders
	}
	return proxyHere
}

// h2MatchRequest is the request matchRequest reads for st, built from an
// HTTP/2 request's fields: method, URL path and query, and of its header
// only what matchRequest looks at (the cookie, the fields st's header
// rules name). nil when its path does not parse (net/http's server then
// answers it). into, when not nil, is reused: the relay's reader keeps
// one, valid until its next request.
func h2MatchRequest(into *h2MatchReq, fields []hpack.HeaderField, st *portState) *http.Request {
	if into == nil {
		into = new(h2MatchReq)
	}
	clear(into.header)
	into.req, into.url = http.Request{}, url.URL{}
	r := &into.req
	add := func(k, v string) {
		if into.header == nil {
			into.header = http.Header{}
		}
		r.Header = into.header
		r.Header[k] = append(r.Header[k], v)
	}
	for _, f := range fields {
		switch {
		case f.Name == ":method":
			r.Method = f.Value
		case f.Name == ":path":
			if r.URL = h2ParsePath(f.Value, &into.url); r.URL == nil {
				return nil
			}
		case f.Name == ":authority":
			r.Host = f.Value
		case f.IsPseudo():
		case f.Name == "cookie":
			add("Cookie", f.Value)
		default:
			if k := ruleKey(st, f.Name); k != "" {
				add(k, f.Value)
			}
		}
	}
	if r.URL == nil {
		return nil
	}
	return r
}

// h2MatchReq holds what h2MatchRequest builds (a nil Header reads as
// empty: most requests need none).
type h2MatchReq struct {
	req    http.Request
	url    url.URL
	header http.Header
}

// h2ParsePath is url.ParseRequestURI, without its work for a plain path
// (no query, no escapes, nothing it would refuse), which it puts in into.
func h2ParsePath(p string, into *url.URL) *url.URL {
	plain := p != "" && p[0] == '/'
	for i := 0; plain && i < len(p); i++ {
		c := p[i]
		plain = c > ' ' && c != '%' && c != '?' && c != 0x7f
	}
	if plain {
		into.Path = p
		return into
	}
	u, err := url.ParseRequestURI(p)
	if err != nil {
		return nil
	}
	return u
}

// ruleKey is the header key under which a header rule of st reads the
// field name (lower case, as HTTP/2 sends it); "" when none does.
func ruleKey(st *portState, name string) string {
	if st == nil {
		return ""
	}
	for _, x := range st.http {
		for i := range x.http.settings.Match {
			m := &x.http.settings.Match[i]
			if len(m.Name) == len(name) && strings.EqualFold(m.Name, name) {
				if m.Canonical != "" {
					return m.Canonical
				}
				return textproto.CanonicalMIMEHeaderKey(name)
			}
		}
	}
	return ""
}

// h2RouteShape is routeShape for the relay: it passes streams on to an
// h2c backend only, and leaves preview links and mirrored ports to
// ServeHTTP.
func h2RouteShape(armed, mirrored bool, to httpProtocol) handOffReason {
	return proxyShape(armed, mirrored, to, httpProtocol{h2: true})
}

// h2Ack says how much of what a peer sent, now passed on (unacked bytes),
// to give back in a WINDOW_UPDATE: all of it once it reaches a quarter of
// the window the relay advertised, else nothing yet. The peer can then
// always send at least three quarters of that window, so it never waits
// for an acknowledgment held back here.
func h2Ack(unacked, window int64) uint32 {
	if unacked <= 0 || unacked < window/4 {
		return 0
	}
	return uint32(min(unacked, 1<<31-1))
}
