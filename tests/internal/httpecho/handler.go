package httpecho

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Paths with a behaviour of their own; every other path gets the plain reply.
const (
	EchoPath    = "/echo"    // streams the request body back
	TrailerPath = "/trailer" // plain reply plus the trailer TrailerHeader
	SlowPath    = "/slow"    // plain reply after ?ms= milliseconds (at most MaxSlow)
)

// Headers set on responses.
const (
	TagHeader     = "X-Detour-Tag"     // the tag, on every response
	ProtoHeader   = "X-Detour-Proto"   // the request's protocol as the backend saw it, e.g. "HTTP/2.0"
	TrailerHeader = "X-Detour-Trailer" // the tag, as a trailer on TrailerPath
)

// MaxSlow bounds the wait on SlowPath, so a typo cannot hang a test.
const MaxSlow = 10 * time.Second

// echoBuf is the read size on EchoPath; each read is written and flushed.
const echoBuf = 32 << 10

// Reply is the plain response body: "<tag> <method> <path>".
func Reply(tag, method, path string) string {
	return tag + " " + method + " " + path
}

// Handler returns the echo handler for tag. Every response carries TagHeader
// and ProtoHeader. By path:
//
//   - EchoPath: copies the request body to the response as it arrives,
//     flushing after each read (Content-Type application/octet-stream), so a
//     client can interleave writes and reads, over HTTP/1.1 too.
//   - TrailerPath: the plain reply, then the trailer TrailerHeader: tag.
//   - SlowPath: waits for the query parameter ms milliseconds (capped at
//     MaxSlow; 400 if it is not a non-negative integer), or until the request
//     is cancelled, then sends the plain reply.
//   - any other path: the plain reply, Reply(tag, method, path), as
//     text/plain.
func Handler(tag string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(TagHeader, tag)
		w.Header().Set(ProtoHeader, r.Proto)
		switch r.URL.Path {
		case EchoPath:
			serveEcho(w, r)
		case TrailerPath:
			w.Header().Set("Trailer", TrailerHeader)
			writePlain(w, tag, r)
			w.Header().Set(TrailerHeader, tag)
		case SlowPath:
			ms, err := strconv.ParseUint(r.URL.Query().Get("ms"), 10, 32)
			if err != nil {
				http.Error(w, fmt.Sprintf("httpecho: %s needs ?ms=<milliseconds>", SlowPath), http.StatusBadRequest)
				return
			}
			t := time.NewTimer(min(time.Duration(ms)*time.Millisecond, MaxSlow))
			defer t.Stop()
			select {
			case <-t.C:
				writePlain(w, tag, r)
			case <-r.Context().Done():
			}
		default:
			writePlain(w, tag, r)
		}
	})
}

func writePlain(w http.ResponseWriter, tag string, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = fmt.Fprint(w, Reply(tag, r.Method, r.URL.Path))
}

func serveEcho(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	// HTTP/1: by default the server drains the request body before the first
	// response write; full duplex lets reads and writes interleave. HTTP/2 is
	// always full duplex and reports ErrNotSupported, which is fine.
	_ = rc.EnableFullDuplex()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil { // headers now, before any body arrives
		return
	}
	buf := make([]byte, echoBuf)
	for {
		n, err := r.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if ferr := rc.Flush(); ferr != nil {
				return
			}
		}
		if err != nil {
			return // io.EOF, or the client went away: the status is already sent
		}
	}
}
