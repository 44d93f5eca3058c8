// Package wsecho is a WebSocket echo server and client for detour's
// HTTP-routing tests, built on github.com/gorilla/websocket.
//
// Handler answers each message with Reply(tag, message), in the message's
// own type (text or binary), and sends its tag in the upgrade response header
// TagHeader. Echo is the client: it dials ws:// or wss:// (without verifying
// the server's certificate), sends messages one at a time, and collects the
// replies.
//
// WebSocket here is the HTTP/1.1 Upgrade handshake (RFC 6455); the client
// offers only "http/1.1" in TLS ALPN, so a TLS server or proxy that also
// speaks h2 still answers it in HTTP/1.1.
package wsecho
