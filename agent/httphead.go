package agent

import (
	"bufio"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// parseRequestHead parses the common request head for the connection
// loop with fewer allocations than http.ReadRequest (one string for all of
// the head, one slice for all of its values): an HTTP/1.1 request in
// origin form, every header line a plain "name: value", one Host, at most
// one Content-Length, no Transfer-Encoding. head is the request line and
// the header lines, each CRLF-ended, without the blank line. Any other
// head gives nil, and is parsed by http.ReadRequest, which decides.
// body reads the request's body from br, where it follows the head.
func parseRequestHead(head []byte, br *bufio.Reader) *http.Request {
	s := string(head)
	line, rest, _ := strings.Cut(s, "\r\n")
	if strings.ContainsAny(line, "\r\n") {
		return nil
	}
	method, line, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(line, " ")
	if !ok1 || !ok2 || proto != "HTTP/1.1" || !validToken(method) || !strings.HasPrefix(target, "/") {
		return nil
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil
	}
	h, ok := parseHeaderLines(rest)
	if !ok {
		return nil
	}
	hosts, cls := h["Host"], h["Content-Length"]
	if len(hosts) != 1 || len(cls) > 1 || h["Transfer-Encoding"] != nil {
		return nil
	}
	delete(h, "Host") // as http.ReadRequest: it is the request's Host
	req := &http.Request{Method: method, URL: u, Proto: proto, ProtoMajor: 1, ProtoMinor: 1, Header: h,
		Host: hosts[0], RequestURI: target, Body: http.NoBody,
		Close: httpguts.HeaderValuesContainsToken(h["Connection"], "close")}
	if len(cls) == 1 {
		n, ok := parseLength(cls[0])
		if !ok {
			return nil
		}
		req.ContentLength = n
		if n > 0 {
			req.Body = &lengthBody{r: br, n: n}
		}
	}
	return req
}

// parseHeaderLines parses CRLF-ended "name: value" lines into a header
// with canonical names; false for any other line (folded, no colon, a
// name or value net/http refuses).
func parseHeaderLines(rest string) (http.Header, bool) {
	n := strings.Count(rest, "\r\n")
	h := make(http.Header, n)
	vals := make([]string, n)
	for i := 0; rest != ""; i++ {
		var line string
		line, rest, _ = strings.Cut(rest, "\r\n")
		name, value, ok := strings.Cut(line, ":")
		if !ok || !validToken(name) || !httpguts.ValidHeaderFieldValue(value) { // no CR or LF inside either
			return nil, false
		}
		value = textproto.TrimString(value)
		key := textproto.CanonicalMIMEHeaderKey(name)
		if prev, dup := h[key]; dup {
			h[key] = append(prev, value)
			continue
		}
		vals[i] = value
		h[key] = vals[i : i+1 : i+1]
	}
	return h, true
}

// validToken: a method or a header name (RFC 9110 token), not empty.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !httpguts.IsTokenRune(rune(s[i])) {
			return false
		}
	}
	return true
}

// parseLength parses a Content-Length value: digits only.
func parseLength(v string) (int64, bool) {
	if v == "" || v[0] < '0' || v[0] > '9' {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 63)
	return int64(n), err == nil
}

// lengthBody is a request body of a known length read from the
// connection's reader; it ends early with io.ErrUnexpectedEOF, as
// net/http's does.
type lengthBody struct {
	r *bufio.Reader
	n int64
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	b.n -= int64(n)
	switch {
	case b.n > 0 && err == io.EOF:
		return n, io.ErrUnexpectedEOF
	case b.n == 0 && err == nil:
		return n, io.EOF
	}
	return n, err
}

func (b *lengthBody) Close() error { return nil }
