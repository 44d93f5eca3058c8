package agent

import (
	"net/http"

	"golang.org/x/net/http/httpguts"
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
	handOffProto   handOffReason = "not HTTP/1.1"            // HTTP/1.0 framing, or the h2c preface (PRI * HTTP/2.0)
	handOffHost    handOffReason = "Host missing or invalid" // net/http answers 400
	handOffHeaders handOffReason = "invalid header"          // net/http answers 400
	handOffExpect  handOffReason = "Expect"                  // 100-continue, or 417 for others
	handOffUpgrade handOffReason = "Upgrade"                 // WebSocket: relayed by ReverseProxy
	handOffPreview handOffReason = "preview link"            // sets the cookie
	handOffMirror  handOffReason = "mirrored port"           // copies taken by mirrorRequest
	handOffBackend handOffReason = "backend not HTTP/1.1"    // HTTP/2 or TLS: ReverseProxy converts
)

// requestShape checks what the loop needs of a request before routing it:
// HTTP/1.1 with one valid Host, valid header fields (as net/http's server
// requires, so that those it would refuse still get its answer), no
// Expect and no Upgrade (http.ReadRequest already refused more than one
// Host line). An Upgrade to h2c was already dropped (ServeHTTP answers
// those in HTTP/1.1 too).
func requestShape(r *http.Request) handOffReason {
	switch {
	case r.ProtoMajor != 1 || r.ProtoMinor != 1:
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
	switch {
	case armed:
		return handOffPreview
	case mirrored:
		return handOffMirror
	case to.h2 || to.tls:
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
