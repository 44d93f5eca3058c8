// Package httpecho is an HTTP echo backend for detour's HTTP-routing tests:
// one listener that answers HTTP/1.1, HTTP/2 (h2c with prior knowledge in
// cleartext, ALPN "h2" over TLS), WebSocket and gRPC, each reply naming the
// backend by its tag so a test can tell where a proxy sent a request.
//
// Handler answers plain HTTP; see its documentation for the paths. ServeAll
// serves Handler, a wsecho.Handler at WebSocketPath and a grpcecho server
// (every request whose Content-Type starts with "application/grpc") on one
// listener. SelfSignedTLS and ClientTLS make the certificates for TLS tests.
package httpecho
