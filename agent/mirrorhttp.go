package agent

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/detour-dev/detour/tunnel"
)

// requestCopy is one request copied whole, waiting for a sender.
type requestCopy struct {
	method, host string
	url          url.URL // path and query only
	header       http.Header
	body         []byte
}

// mirrorRequest starts copying r for every http-mirror in mirrors whose
// rules it matches. It returns nil when no copy waits for r's body, else a
// function to call once r was answered: a copy is queued when the body has
// been read to its end, and dropped (counted) when it never was.
func mirrorRequest(mirrors []*intercept, r *http.Request) (finish func()) {
	var to []*mirror
	for _, ic := range mirrors {
		if mirrorMatches(&ic.http.settings, r) && !ic.owner.session.IsClosed() {
			to = append(to, ic.mirror)
		}
	}
	if len(to) == 0 {
		return nil
	}
	switch {
	case r.Header.Get("Upgrade") != "":
		countAll(to, copyUpgrade)
		return nil
	case r.ContentLength > tunnel.MaxMirrorBody:
		countAll(to, copyTooLarge)
		return nil
	}
	rc := &requestCopy{method: r.Method, host: r.Host, header: mirrorHeader(r.Header),
		url: url.URL{Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}}
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		for _, m := range to {
			m.enqueue(rc)
		}
		return nil
	}
	rec := &bodyRecorder{ReadCloser: r.Body, to: to, rc: rc}
	if r.ContentLength > 0 {
		rec.buf = make([]byte, 0, r.ContentLength)
	}
	r.Body = rec
	return rec.finish
}

// mirrorMatches applies an http-mirror's rules: all of them; none copies
// every request.
func mirrorMatches(s *tunnel.HTTPSettings, r *http.Request) bool {
	if len(s.Match) > 0 && !headersMatch(r.Header, s.Match) {
		return false
	}
	return requestLineMatches(r, s)
}

func countAll(ms []*mirror, outcome string) {
	for _, m := range ms {
		m.count(outcome)
	}
}

// hopHeaders are a connection's, not the request's: the copy travels on
// another connection (and HTTP/2 refuses them).
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Trailer", "Transfer-Encoding", "Upgrade"}

func mirrorHeader(h http.Header) http.Header {
	h = h.Clone()
	for _, f := range h["Connection"] {
		for _, name := range strings.Split(f, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
	if te := h.Get("Te"); te != "" && !strings.EqualFold(te, "trailers") {
		h.Del("Te")
	}
	return h
}

// bodyRecorder keeps what is read of a request's body, up to
// tunnel.MaxMirrorBody, for the copies; at its end it queues them.
type bodyRecorder struct {
	io.ReadCloser
	to []*mirror
	rc *requestCopy

	mu      sync.Mutex
	buf     []byte
	over    bool // longer than MaxMirrorBody: no copy
	settled bool
}

func (b *bodyRecorder) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.settled {
		return n, err
	}
	if !b.over && len(b.buf)+n > tunnel.MaxMirrorBody {
		b.over, b.buf = true, nil
	}
	if !b.over {
		b.buf = append(b.buf, p[:n]...)
	}
	if err == io.EOF {
		b.settleLocked(true)
	}
	return n, err
}

// finish reads for the copies what the backend left of the body (its
// server discards it anyway), up to what a copy may hold, and settles a
// body that still did not end.
func (b *bodyRecorder) finish() {
	_, _ = io.Copy(io.Discard, io.LimitReader(onlyReader{b}, tunnel.MaxMirrorBody+1))
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.settled {
		b.settleLocked(false)
	}
}

func (b *bodyRecorder) settleLocked(complete bool) {
	b.settled = true
	switch {
	case b.over:
		countAll(b.to, copyTooLarge)
	case !complete:
		countAll(b.to, copyIncomplete)
	default:
		b.rc.body = b.buf
		for _, m := range b.to {
			m.enqueue(b.rc)
		}
	}
	b.buf = nil
}

// enqueue queues a copy without waiting: a full queue drops it, counted.
func (m *mirror) enqueue(rc *requestCopy) {
	if m.ctx.Err() != nil {
		return
	}
	n := int64(len(rc.body))
	if m.queued.Add(n) > mirrorQueueBytes {
		m.queued.Add(-n)
		m.count(copyQueueFull)
		return
	}
	select {
	case m.queue <- rc:
	default:
		m.queued.Add(-n)
		m.count(copyQueueFull)
	}
}

// send is one of an http-mirror's senders.
func (m *mirror) send() {
	defer m.wg.Done()
	for {
		select {
		case <-m.ctx.Done():
			return
		case rc := <-m.queue:
			outcome := m.deliver(rc)
			m.queued.Add(-int64(len(rc.body)))
			if m.ctx.Err() == nil {
				m.count(outcome)
			}
		}
	}
}

// deliver sends one copy to the mirror's local process through the
// tunnel, reads its answer and throws it away.
func (m *mirror) deliver(rc *requestCopy) string {
	ctx, cancel := context.WithTimeout(m.ctx, mirrorCopyTimeout)
	defer cancel()
	b, err := m.ic.http.localBackend(ctx)
	if err != nil {
		m.log.Debug("mirror copy not delivered", zap.Error(err))
		return copyFailed
	}
	u := rc.url
	u.Scheme, u.Host = "http", rc.host
	if b.proto.tls {
		u.Scheme = "https"
	}
	if u.Host == "" {
		u.Host = "app"
	}
	req, err := http.NewRequestWithContext(ctx, rc.method, u.String(), bytes.NewReader(rc.body))
	if err != nil {
		return copyFailed
	}
	req.Header = rc.header.Clone()
	req.Host = rc.host
	resp, err := b.RoundTrip(req)
	if err != nil {
		m.log.Debug("mirror copy not delivered", zap.Error(err))
		return copyFailed
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return copyFailed
	}
	return copyCopied
}

// onlyReader hides everything but Read (io.Copy would use WriterTo).
type onlyReader struct{ io.Reader }
