package agent

import (
	"bufio"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
)

// HTTP/1.1 on the wire for the connection loop (httpconn.go): heads and
// bodies written as they pass, without net/http's server or Transport.

// proxyHopHeaders are ReverseProxy's hop-by-hop fields (RFC 9110 7.6.1
// and RFC 2616's list), removed in both directions with those Connection
// names.
var proxyHopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func removeHopByHop(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, f := range proxyHopHeaders {
		delete(h, f)
	}
}

// cleanQuery drops the query parameters net/url cannot parse (a ';', a
// bad escape), as ReverseProxy does so that the backend sees what a Go
// server would.
func cleanQuery(s string) string {
	for i := 0; i < len(s); {
		switch s[i] {
		case ';':
			return reencodeQuery(s)
		case '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return reencodeQuery(s)
			}
			i += 3
		default:
			i++
		}
	}
	if strings.Count(s, "&") >= 10000 { // net/url's limit on parameters
		return reencodeQuery(s)
	}
	return s
}

func reencodeQuery(s string) string {
	v, _ := url.ParseQuery(s)
	return v.Encode()
}

// writeRequestHead writes req's request line and header, with the framing
// of its body: Content-Length, or chunked (announcing its trailers) when
// the length is unknown.
func writeRequestHead(w *bufio.Writer, req *http.Request) {
	writeRequestLine(w, req)
	writeHeaderLines(w, req.Header)
	writeFraming(w, req)
	w.WriteString("\r\n")
}

// writeRequestLine writes req's request line (in origin form) and Host.
func writeRequestLine(w *bufio.Writer, req *http.Request) {
	w.WriteString(req.Method)
	w.WriteByte(' ')
	w.WriteString(req.URL.RequestURI())
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(req.Host)
	w.WriteString("\r\n")
}

// writeFraming writes the framing of req's body: Content-Length (0 too,
// but for GET and HEAD, as net/http's Transport does), or chunked
// (announcing its trailers) when the length is unknown.
func writeFraming(w *bufio.Writer, req *http.Request) {
	switch {
	case req.ContentLength > 0 || req.ContentLength == 0 && req.Method != http.MethodGet && req.Method != http.MethodHead:
		writeContentLength(w, req.ContentLength)
	case req.ContentLength < 0:
		w.WriteString("Transfer-Encoding: chunked\r\n")
		writeTrailerNames(w, req.Trailer)
	}
}

// writeResponseHead writes res's status line and header, length as its
// Content-Length unless negative; chunked adds the framing of a body of
// unknown length and announces its trailers.
func writeResponseHead(w *bufio.Writer, res *http.Response, length int64, chunked bool) {
	w.WriteString("HTTP/1.1 ")
	if res.Status != "" {
		w.WriteString(res.Status)
	} else {
		w.WriteString(strconv.Itoa(res.StatusCode))
	}
	w.WriteString("\r\n")
	writeHeaderLines(w, res.Header)
	if length >= 0 {
		writeContentLength(w, length)
	}
	if chunked {
		w.WriteString("Transfer-Encoding: chunked\r\n")
		writeTrailerNames(w, res.Trailer)
	}
	w.WriteString("\r\n")
}

func writeContentLength(w *bufio.Writer, n int64) {
	var b [40]byte
	line := append(b[:0], "Content-Length: "...)
	line = strconv.AppendInt(line, n, 10)
	w.Write(append(line, '\r', '\n'))
}

// headerNewlines turns what would end a line into spaces, as net/http
// does when it writes a header.
var headerNewlines = strings.NewReplacer("\n", " ", "\r", " ")

func writeHeaderLines(w *bufio.Writer, h http.Header) {
	for k, vv := range h {
		for _, v := range vv {
			if strings.ContainsAny(v, "\r\n") {
				v = headerNewlines.Replace(v)
			}
			w.WriteString(k)
			w.WriteString(": ")
			w.WriteString(v)
			w.WriteString("\r\n")
		}
	}
}

func writeTrailerNames(w *bufio.Writer, t http.Header) {
	if len(t) == 0 {
		return
	}
	w.WriteString("Trailer: ")
	first := true
	for k := range t {
		if !first {
			w.WriteString(", ")
		}
		first = false
		w.WriteString(k)
	}
	w.WriteString("\r\n")
}

// writeTrailer ends a chunked body: the last chunk, then the trailer
// fields (known once the body was read to its end).
func writeTrailer(w *bufio.Writer, t http.Header) {
	w.WriteString("0\r\n")
	writeHeaderLines(w, t)
	w.WriteString("\r\n")
}

// copyBody copies src to w, as chunks when chunked, flushing w before any
// read that may wait: when from, the buffer src reads, is empty (nil:
// src never waits).
func copyBody(w *bufio.Writer, src io.Reader, from *bufio.Reader, chunked bool) error {
	bp := proxyBuffers.pool.Get().(*[]byte)
	defer proxyBuffers.pool.Put(bp)
	buf := *bp
	for {
		if from != nil && from.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return err
			}
		}
		n, err := src.Read(buf)
		if n > 0 {
			if chunked {
				w.WriteString(strconv.FormatInt(int64(n), 16))
				w.WriteString("\r\n")
			}
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if chunked {
				w.WriteString("\r\n")
			}
		}
		switch {
		case err == io.EOF:
			return nil
		case err != nil:
			return err
		}
	}
}
