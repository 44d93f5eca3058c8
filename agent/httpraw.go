package agent

import (
	"bufio"
	"bytes"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// Heads passed through as they came, for the connection loop's common
// case (httpconn.go): the header lines are copied from the reader's buffer
// to the other side's, minus the hop-by-hop ones, instead of being parsed
// into a map and written out of it again. What these functions do not
// take (a head not whole in the buffer, folded or odd lines, framing
// other than a Content-Length) goes the parsed way.

var crlf = []byte("\r\n")

// rawHopHeaders are not passed through: hop-by-hop fields, and those the
// loop writes itself (Host, the body's framing).
var rawHopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Host", "Content-Length"}

// nextLine splits the first CRLF-ended line off head.
func nextLine(head []byte) (line, rest []byte) {
	i := bytes.Index(head, crlf)
	if i < 0 {
		return head, nil
	}
	return head[:i], head[i+2:]
}

// dropped reports whether the header line named name is not passed
// through: a hop-by-hop field, or one a Connection field lists.
func dropped(name []byte, listed []string) bool {
	if len(listed) == 0 && !hopInitial(name) {
		return false
	}
	for _, h := range rawHopHeaders {
		if len(h) == len(name) && strings.EqualFold(h, string(name)) {
			return true
		}
	}
	for _, h := range listed {
		if strings.EqualFold(h, string(name)) {
			return true
		}
	}
	return false
}

// hopInitial: name may be one of rawHopHeaders, by its first letter.
func hopInitial(name []byte) bool {
	if len(name) == 0 {
		return false
	}
	switch name[0] | 0x20 {
	case 'c', 'h', 'k', 'p', 't', 'u':
		return true
	}
	return false
}

// connectionTokens are the names a Connection field lists.
func connectionTokens(vv []string) []string {
	var out []string
	for _, v := range vv {
		for t := range strings.SplitSeq(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				out = append(out, t)
			}
		}
	}
	return out
}

// writeRawRequestHead writes req's head from head, its raw form (request
// line and header lines, each CRLF-ended, before the blank line): the
// request line from req (its URL cleaned), the header lines that are not
// hop-by-hop as they came, then Host, "Te: trailers" and the framing as
// writeRequestHead does. listed are the caller's Connection tokens.
func writeRawRequestHead(w *bufio.Writer, req *http.Request, head []byte, listed []string, te bool) {
	writeRequestLine(w, req)
	_, head = nextLine(head) // the request line
	for len(head) > 0 {
		var line []byte
		line, head = nextLine(head)
		name, _, _ := bytes.Cut(line, []byte(":"))
		if dropped(name, listed) {
			continue
		}
		w.Write(line)
		w.Write(crlf)
	}
	if te {
		w.WriteString("Te: trailers\r\n")
	}
	writeFraming(w, req)
	w.WriteString("\r\n")
}

// rawResponse is what the loop needs of a response head it passes through.
type rawResponse struct {
	status []byte // the status line after the version: "200 OK"
	lines  []byte // the header lines, each CRLF-ended
	size   int    // of the whole head in the reader's buffer, blank line included
	length int64  // Content-Length
	close  bool   // Connection: close
	listed []string
}

// peekRawResponse reads a response head from br's buffer without
// consuming it, if the loop can pass it through: HTTP/1.1, whole in the
// buffer, a final status other than 204 and 304, one valid Content-Length,
// no Transfer-Encoding or Trailer, every line a plain "name: value".
func peekRawResponse(br *bufio.Reader) (rawResponse, bool) {
	buf, _ := br.Peek(br.Buffered())
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		return rawResponse{}, false
	}
	status, lines := nextLine(buf[:end+2])
	rr := rawResponse{lines: lines, size: end + 4, length: -1}
	var ok bool
	if rr.status, ok = bytes.CutPrefix(status, []byte("HTTP/1.1 ")); !ok || !finalStatus(rr.status) {
		return rawResponse{}, false
	}
	for rest := lines; len(rest) > 0; {
		var line []byte
		line, rest = nextLine(rest)
		if !rr.take(line) {
			return rawResponse{}, false
		}
	}
	return rr, rr.length >= 0
}

// finalStatus: three digits and a reason, 200 to 599 but 204 and 304
// (which have no body whatever their length says).
func finalStatus(s []byte) bool {
	if len(s) < 4 || s[3] != ' ' {
		return false
	}
	code, err := strconv.Atoi(string(s[:3]))
	return err == nil && code >= 200 && code < 600 && code != http.StatusNoContent && code != http.StatusNotModified
}

// take checks one header line and notes what the loop needs of it.
func (rr *rawResponse) take(line []byte) bool {
	name, value, ok := bytes.Cut(line, []byte(":"))
	if !ok || len(name) == 0 || !validName(name) || !validValue(value) {
		return false // also a folded line: it starts with a space
	}
	value = bytes.TrimSpace(value)
	switch {
	case strings.EqualFold("Content-Length", string(name)):
		n, err := strconv.ParseInt(string(value), 10, 64)
		if err != nil || n < 0 || rr.length >= 0 {
			return false
		}
		rr.length = n
	case strings.EqualFold("Transfer-Encoding", string(name)), strings.EqualFold("Trailer", string(name)):
		return false
	case strings.EqualFold("Connection", string(name)):
		for _, t := range connectionTokens([]string{string(value)}) {
			if strings.EqualFold(t, "close") {
				rr.close = true
			}
			rr.listed = append(rr.listed, t)
		}
	}
	return true
}

// validValue is httpguts.ValidHeaderFieldValue on bytes: no control
// characters but tabs.
func validValue(v []byte) bool {
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func validName(name []byte) bool {
	for _, c := range name {
		if !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	return true
}

// writeRawResponseHead writes rr to the caller: its status, its header
// lines that are not hop-by-hop as they came, Connection: close when the
// caller asked for it, and its Content-Length.
func writeRawResponseHead(w *bufio.Writer, rr *rawResponse, closing bool) {
	w.WriteString("HTTP/1.1 ")
	w.Write(rr.status)
	w.Write(crlf)
	for rest := rr.lines; len(rest) > 0; {
		var line []byte
		line, rest = nextLine(rest)
		name, _, _ := bytes.Cut(line, []byte(":"))
		if dropped(name, rr.listed) {
			continue
		}
		w.Write(line)
		w.Write(crlf)
	}
	if closing {
		w.WriteString("Connection: close\r\n")
	}
	writeContentLength(w, rr.length)
	w.WriteString("\r\n")
}
