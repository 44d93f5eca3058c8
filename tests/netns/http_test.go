package netnstest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/tests/internal/grpcecho"
	"github.com/detour-dev/detour/tests/internal/httpecho"
	"github.com/detour-dev/detour/tests/internal/nsworld"
	"github.com/detour-dev/detour/tests/internal/wsecho"
	"github.com/detour-dev/detour/tunnel"
)

// The http mechanism in the netns world: the agent binary in the pod's
// namespace routes each request by its headers to alice's or bob's
// workstation process (in this test process, through their tunnels) or to
// the app, whatever protocol the cluster client speaks.

// Ports of these tests inside the pod namespace.
const (
	htAppPort   = 8280  // the app: httpecho.ServeAll (HTTP/1.1, h2c or TLS, WebSocket, gRPC)
	htFrontPort = 18280 // port-rename mode: the agent's listener for htAppPort
)

// The two personal intercepts' header rules: bob's needs both headers.
var (
	htAliceRules = []string{"x-dev=alice"}
	htBobRules   = []string{"X-Dev=bob", "x-team=blue"}
)

// htRoutes are requests and who must answer each.
var htRoutes = []struct {
	name   string
	header http.Header
	want   string // the tag of the backend that must answer
}{
	{"no header", nil, "app"},
	{"alice's header", http.Header{"X-Dev": {"alice"}}, "alice"},
	{"bob's two headers", http.Header{"X-Dev": {"bob"}, "X-Team": {"blue"}}, "bob"},
	{"bob's first header only", http.Header{"X-Dev": {"bob"}}, "app"},
	{"alice's header and bob's team", http.Header{"X-Dev": {"alice"}, "X-Team": {"blue"}}, "alice"},
	{"someone else's value", http.Header{"X-Dev": {"carol"}}, "app"},
}

// htDestinations is one route to each backend, for the heavier exchanges.
var htDestinations = htRoutes[:3]

type htPodOptions struct {
	redirect bool // nftables redirect; else the port-rename listener
	tls      bool // terminating certificate mounted; the app and the workstation processes serve TLS
	http1    bool // the app and the workstation processes speak HTTP/1.1 only (no h2c): the agent's HTTP/1.1 connection loop proxies them
}

// htPod is a pod whose app answers HTTP, with alice's and bob's http
// intercepts on its port.
type htPod struct {
	*pod
	opts    htPodOptions
	front   string         // host:port cluster clients connect to
	roots   *x509.CertPool // trusts only the agent's terminating certificate
	certDER []byte         // that certificate
}

func htStartPod(t *testing.T, opts htPodOptions) *htPod {
	t.Helper()
	requireWorld(t)
	w, err := nsworld.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	hp := &htPod{pod: &pod{w: w}, opts: opts}

	args := []string{"run",
		"--tunnel-addr", fmt.Sprintf("127.0.0.1:%d", tunnelPort),
		"--health-addr", fmt.Sprintf(":%d", healthPort),
		"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", metricsPort),
		"--keepalive", "500ms", "--write-timeout", "500ms",
		"--shutdown-grace", "2s",
		"--log-level", "info",
		"--originating-tls-dir=",
	}
	var appTLS *tls.Config
	if opts.tls {
		// The Secret the webhook would mount: a certificate for the pod IP,
		// which the cluster clients trust. The app has another one of its own.
		_, certPEM, keyPEM, err := httpecho.SelfSignedTLS(w.PodIP.String())
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "tls.crt"), certPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "tls.key"), keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(certPEM)
		hp.certDER = block.Bytes
		hp.roots = x509.NewCertPool()
		hp.roots.AppendCertsFromPEM(certPEM)
		args = append(args, "--terminating-tls-dir", dir)
		appTLS = htSelfSigned(t)
	} else {
		args = append(args, "--terminating-tls-dir=")
	}
	hp.serve(t, w.Pod, fmt.Sprintf(":%d", htAppPort), "app", appTLS)

	if opts.redirect {
		initRedirect(t, w, fmt.Sprint(htAppPort))
		args = append(args, "--redirect-addr", fmt.Sprintf(":%d", agentPort), "--redirect-ports", fmt.Sprint(htAppPort))
		hp.front = fmt.Sprintf("%s:%d", w.PodIP, htAppPort)
	} else {
		args = append(args, "--listen", fmt.Sprintf("%d:%d", htFrontPort, htAppPort))
		hp.front = fmt.Sprintf("%s:%d", w.PodIP, htFrontPort)
	}
	hp.agent = runAgent(t, w, args...)
	return hp
}

// htSelfSigned is a server TLS config with a certificate of its own
// (which the agent does not verify: it reaches the app and the
// workstation processes with InsecureSkipVerify).
func htSelfSigned(t *testing.T) *tls.Config {
	t.Helper()
	cfg, _, _, err := httpecho.SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// htServe runs httpecho.ServeAll as tag on addr in namespace ns ("" = the
// workstation), with TLS when cfg is given, until the test ends.
func htServe(t *testing.T, ns, addr, tag string, cfg *tls.Config) string {
	t.Helper()
	ln := listen(t, ns, addr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- httpecho.ServeAll(ctx, ln, tag, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s's server: %v", tag, err)
		}
	})
	return ln.Addr().String()
}

// serve runs the app or a workstation process as the pod's options say:
// httpecho.ServeHTTP1 for http1, else htServe.
func (hp *htPod) serve(t *testing.T, ns, addr, tag string, cfg *tls.Config) string {
	t.Helper()
	if !hp.opts.http1 {
		return htServe(t, ns, addr, tag, cfg)
	}
	ln := listen(t, ns, addr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- httpecho.ServeHTTP1(ctx, ln, tag) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s's server: %v", tag, err)
		}
	})
	return ln.Addr().String()
}

// htJoin creates s's http intercept of the app port, relayed to local.
func htJoin(t *testing.T, s *client.Session, name, local string, rules []string) []tunnel.InterceptInfo {
	t.Helper()
	var match []tunnel.HeaderMatch
	for _, r := range rules {
		m, err := tunnel.ParseHeaderMatch(r)
		if err != nil {
			t.Fatal(err)
		}
		match = append(match, m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := s.CreateIntercept(ctx, client.InterceptSpec{
		Name: name, Port: htAppPort, Mechanism: tunnel.MechanismHTTP, LocalAddr: local,
		Args: tunnel.HTTPSettings{Match: match}.Args(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// htDevelopers starts alice's and bob's workstation processes (serving TLS
// when the app does) and their intercepts, each in a session of its own, and
// checks what the agent lists.
func (hp *htPod) htDevelopers(t *testing.T) {
	t.Helper()
	// The processes first, so that at the end the sessions close first:
	// with their relays gone, the servers stop at once.
	aliceLocal := hp.serve(t, "", "127.0.0.1:0", "alice", hp.localTLS(t))
	bobLocal := hp.serve(t, "", "127.0.0.1:0", "bob", hp.localTLS(t))
	htJoin(t, hp.session(t, "alice@laptop", tunnel.Config{}), "web", aliceLocal, htAliceRules)
	list := htJoin(t, hp.session(t, "bob@desk", tunnel.Config{}), "web", bobLocal, htBobRules)

	// The app was probed when alice joined: httpecho answers h2c in clear
	// text, and negotiates h2 by ALPN over TLS.
	wantProto := "h2c"
	switch {
	case hp.opts.tls:
		wantProto = "https+h2"
	case hp.opts.http1:
		wantProto = "http/1.1"
	}
	want := []string{
		fmt.Sprintf("web %d http alice@laptop [x-dev=alice] %s", htAppPort, wantProto),
		fmt.Sprintf("web %d http bob@desk [x-dev=bob x-team=blue] %s", htAppPort, wantProto),
	}
	var got []string
	for _, ic := range list {
		proto := ic.AppProtocol
		got = append(got, fmt.Sprintf("%s %d %s %s %v %s", ic.Name, ic.Port, ic.Mechanism, ic.Holder, ic.Match, proto))
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("intercepts listed:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// localTLS is a workstation process's server config when the app serves
// TLS, else nil. Each server gets its own: httpecho.ServeAll's http.Server
// adds its ALPN protocols to the config it is given.
func (hp *htPod) localTLS(t *testing.T) *tls.Config {
	if !hp.opts.tls {
		return nil
	}
	return htSelfSigned(t)
}

// clientTLS trusts the agent's terminating certificate only.
func (hp *htPod) clientTLS(nextProtos ...string) *tls.Config {
	return &tls.Config{RootCAs: hp.roots, MinVersion: tls.VersionTLS12, NextProtos: nextProtos, ServerName: hp.w.PodIP.String()}
}

func (hp *htPod) dial(ctx context.Context, addr string) (net.Conn, error) {
	return nsworld.Dial(ctx, hp.w.Client, addr)
}

// htCaller is one way a cluster client speaks HTTP to the pod.
type htCaller struct {
	name    string
	rt      http.RoundTripper
	base    string // scheme://front
	proto   string // of the responses it must get
	alpn    string // over TLS: the protocol it must negotiate
	certDER []byte // over TLS: the certificate the agent must present
	dials   *atomic.Int32
}

// htCallers are the callers for hp: HTTP/1.1 and h2c in clear text, or
// HTTP/1.1 and HTTP/2 negotiated by ALPN over TLS.
func (hp *htPod) htCallers(t *testing.T) []*htCaller {
	if hp.opts.tls {
		return []*htCaller{hp.htCaller(t, "https/1.1"), hp.htCaller(t, "h2")}
	}
	return []*htCaller{hp.htCaller(t, "http/1.1"), hp.htCaller(t, "h2c")}
}

func (hp *htPod) htCaller(t *testing.T, kind string) *htCaller {
	t.Helper()
	c := &htCaller{name: kind, dials: new(atomic.Int32), base: "http://" + hp.front, proto: "HTTP/1.1"}
	dial := func(ctx context.Context, _, addr string) (net.Conn, error) {
		c.dials.Add(1)
		return hp.dial(ctx, addr)
	}
	switch kind {
	case "http/1.1":
		tr := &http.Transport{DialContext: dial, MaxConnsPerHost: 1, DisableCompression: true}
		t.Cleanup(tr.CloseIdleConnections)
		c.rt = tr
	case "h2c":
		tr := &http2.Transport{AllowHTTP: true, DisableCompression: true, DialTLSContext: func(ctx context.Context, n, a string, _ *tls.Config) (net.Conn, error) {
			return dial(ctx, n, a)
		}}
		t.Cleanup(tr.CloseIdleConnections)
		c.rt, c.proto = tr, "HTTP/2.0"
	case "https/1.1":
		tr := &http.Transport{DialContext: dial, MaxConnsPerHost: 1, DisableCompression: true, TLSClientConfig: hp.clientTLS("http/1.1")}
		t.Cleanup(tr.CloseIdleConnections)
		c.rt, c.base, c.alpn, c.certDER = tr, "https://"+hp.front, "http/1.1", hp.certDER
	case "h2":
		tr := &http.Transport{DialContext: dial, MaxConnsPerHost: 1, DisableCompression: true, TLSClientConfig: hp.clientTLS(), ForceAttemptHTTP2: true}
		t.Cleanup(tr.CloseIdleConnections)
		c.rt, c.base, c.proto, c.alpn, c.certDER = tr, "https://"+hp.front, "HTTP/2.0", "h2", hp.certDER
	default:
		t.Fatalf("no caller %q", kind)
	}
	return c
}

// htAnswer is what one request got.
type htAnswer struct {
	status        int
	proto         string
	tag           string // who answered: httpecho's tag header
	body          string
	trailer       string // httpecho's trailer
	contentLength int64
	alpn          string
	peer          []byte // over TLS: the certificate presented
	err           error
}

func (c *htCaller) send(ctx context.Context, method, path string, header http.Header, body io.Reader) htAnswer {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return htAnswer{err: err}
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.rt.RoundTrip(req)
	if err != nil {
		return htAnswer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	a := htAnswer{status: resp.StatusCode, proto: resp.Proto, tag: resp.Header.Get(httpecho.TagHeader), body: string(b),
		trailer: resp.Trailer.Get(httpecho.TrailerHeader), contentLength: resp.ContentLength, err: err}
	if resp.TLS != nil {
		a.alpn = resp.TLS.NegotiatedProtocol
		if len(resp.TLS.PeerCertificates) > 0 {
			a.peer = resp.TLS.PeerCertificates[0].Raw
		}
	}
	return a
}

// get sends GET path with header, bounded by 10 s.
func (c *htCaller) get(path string, header http.Header) htAnswer {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.send(ctx, http.MethodGet, path, header, nil)
}

// landed says whether a is want's plain reply to method path, in the
// caller's protocol (and from the agent's certificate over TLS).
func (c *htCaller) landed(a htAnswer, want, method, path string) error {
	switch {
	case a.err != nil:
		return a.err
	case a.status != http.StatusOK:
		return fmt.Errorf("status %d: %q", a.status, a.body)
	case a.tag != want || a.body != httpecho.Reply(want, method, path):
		return fmt.Errorf("answered by %q: %q; want %s's %q", a.tag, a.body, want, httpecho.Reply(want, method, path))
	case a.proto != c.proto:
		return fmt.Errorf("response in %s, want %s", a.proto, c.proto)
	case a.alpn != c.alpn:
		return fmt.Errorf("ALPN %q, want %q", a.alpn, c.alpn)
	case c.certDER != nil && !bytes.Equal(a.peer, c.certDER):
		return errors.New("TLS was not terminated with the agent's certificate")
	}
	return nil
}

// TestHTTPRouting: alice's and bob's http intercepts and the app share one
// port; each request, whatever the caller's protocol, lands where its
// headers say, in both listening modes, in clear text and with the agent
// terminating TLS, and with an app and workstation processes that speak
// HTTP/1.1 only (the agent's own HTTP/1.1 proxy, not net/http's Transport).
func TestHTTPRouting(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts htPodOptions
	}{
		{"redirect/cleartext", htPodOptions{redirect: true}},
		{"port-rename/cleartext", htPodOptions{redirect: false}},
		{"redirect/tls", htPodOptions{redirect: true, tls: true}},
		{"port-rename/tls", htPodOptions{redirect: false, tls: true}},
		{"redirect/http1-app", htPodOptions{redirect: true, http1: true}},
		{"port-rename/http1-app", htPodOptions{redirect: false, http1: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hp := htStartPod(t, tc.opts)
			hp.htDevelopers(t)
			for _, c := range hp.htCallers(t) {
				t.Run(c.name, func(t *testing.T) {
					t.Run("keep-alive", func(t *testing.T) { htKeepAlive(t, c) })
					if c.proto == "HTTP/2.0" {
						t.Run("concurrent streams", func(t *testing.T) { htConcurrentStreams(t, c) })
					}
					t.Run("streaming body", func(t *testing.T) { htStreamingBody(t, c) })
					t.Run("trailers", func(t *testing.T) { htTrailers(t, c) })
				})
			}
			t.Run("pipelined HTTP/1.1", func(t *testing.T) { htPipelined(t, hp) })
			t.Run("websocket", func(t *testing.T) { htWebSocket(t, hp) })
			if !tc.opts.http1 { // gRPC needs HTTP/2 at the app
				t.Run("grpc", func(t *testing.T) { htGRPC(t, hp) })
			}
			// h2c callers of an h2c app went through the agent's h2c relay,
			// none of their requests through its fallback; the others never
			// reach the relay.
			relay, fallback := hp.h2cStreams(t)
			if wantRelay := !tc.opts.tls && !tc.opts.http1; (relay > 0) != wantRelay || fallback != 0 {
				t.Errorf("h2c streams: %v relayed, %v through the fallback; want relayed %v, none through the fallback", relay, fallback, wantRelay)
			}
		})
	}
}

// h2cStreams reads the agent's count of h2c requests its relay passed on
// itself, and of those it handed to its net/http server.
func (hp *htPod) h2cStreams(t *testing.T) (relay, fallback float64) {
	m := hp.lngMetrics(t)
	return m[`detour_agent_http_h2c_streams_total{path="relay"}`], m[`detour_agent_http_h2c_streams_total{path="fallback"}`]
}

// htKeepAlive sends every route twice, interleaved, on one connection.
func htKeepAlive(t *testing.T, c *htCaller) {
	for round := range 2 {
		for i, r := range htRoutes {
			path := fmt.Sprintf("/keep-alive/%d/%d", round, i)
			if err := c.landed(c.get(path, r.header), r.want, http.MethodGet, path); err != nil {
				t.Errorf("round %d, %s: %v", round, r.name, err)
			}
		}
	}
	if n := c.dials.Load(); n != 1 {
		t.Errorf("%d connections for %d requests, want 1 (keep-alive)", n, 2*len(htRoutes))
	}
}

// htConcurrentStreams has requests for every destination in flight at once
// on one HTTP/2 connection. Each takes htSlow at its backend: one after
// the other they would take len × htSlow.
func htConcurrentStreams(t *testing.T, c *htCaller) {
	const htSlow = 400 * time.Millisecond
	if a := c.get("/warm-up", nil); a.err != nil {
		t.Fatal(a.err)
	}
	var reqs []int // indices into htRoutes
	for range 2 {
		for i := range htRoutes {
			reqs = append(reqs, i)
		}
	}
	answers := make([]htAnswer, len(reqs))
	var wg sync.WaitGroup
	start := time.Now()
	for i, r := range reqs {
		wg.Go(func() {
			answers[i] = c.get(fmt.Sprintf("%s?ms=%d", httpecho.SlowPath, htSlow.Milliseconds()), htRoutes[r].header)
		})
	}
	wg.Wait()
	took := time.Since(start)
	for i, r := range reqs {
		if err := c.landed(answers[i], htRoutes[r].want, http.MethodGet, httpecho.SlowPath); err != nil {
			t.Errorf("stream %d, %s: %v", i, htRoutes[r].name, err)
		}
	}
	if n := c.dials.Load(); n != 1 {
		t.Errorf("%d connections, want every stream on 1", n)
	}
	if sequential := time.Duration(len(reqs)) * htSlow; took > sequential/2 {
		t.Errorf("%d streams of %s took %s: they did not run concurrently", len(reqs), htSlow, took)
	}
	t.Logf("%d concurrent streams of %s answered in %s", len(reqs), htSlow, took.Round(time.Millisecond))
}

// htStreamingBody: POST /echo, through each route.
func htStreamingBody(t *testing.T, c *htCaller) {
	t.Run("full duplex", func(t *testing.T) {
		// Each chunk must come back before the next is sent: nothing on
		// the way may wait for the whole body.
		chunks := []string{"first", strings.Repeat("y", 100_000), "last"}
		for _, r := range htDestinations {
			if err := htInterleavedEcho(c, r.header, r.want, chunks); err != nil {
				t.Errorf("%s: %v", r.name, err)
			}
		}
	})
	t.Run("whole body", func(t *testing.T) {
		// A body of unknown length written as fast as it goes, read back
		// only once it is all sent: every byte must come back, in order.
		// 1 MiB of consecutive 32-bit counters: no run of it repeats, so a
		// loss shows where it happened.
		body := make([]byte, 1<<20)
		for i := 0; i < len(body); i += 4 {
			binary.BigEndian.PutUint32(body[i:], uint32(i/4))
		}
		for _, r := range htDestinations {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			a := c.send(ctx, http.MethodPost, httpecho.EchoPath, r.header, struct{ io.Reader }{bytes.NewReader(body)})
			cancel()
			got := []byte(a.body)
			switch {
			case a.status != http.StatusOK || a.tag != r.want || a.proto != c.proto:
				t.Errorf("%s: %s %d from %q (%v), want %s 200 from %s", r.name, a.proto, a.status, a.tag, a.err, c.proto, r.want)
			case a.err == nil && bytes.Equal(got, body):
			default:
				// Without full duplex on HTTP/1.1, net/http's server would
				// discard up to 256 KiB + 1 of the unread body when the
				// response starts: the offset shows where bytes went.
				t.Errorf("%s: %d bytes came back (%v), differing from the %d sent at offset %d", r.name, len(got), a.err, len(body), htFirstDifference(got, body))
			}
		}
	})
}

func htFirstDifference(a, b []byte) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// errHTNoHeaders: the response headers did not come before the body was sent.
var errHTNoHeaders = errors.New("no response headers before the body was sent")

// htInterleavedEcho posts chunks to /echo one at a time, reading each one's
// echo before writing the next.
func htInterleavedEcho(c *htCaller, header http.Header, want string, chunks []string) error {
	// A correct route answers in milliseconds; the bound only matters when
	// something waits for the whole body.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	pr, pw := io.Pipe()
	defer pw.Close()
	// The transport waits for its body writer, which reads the pipe, before
	// it returns an error: the deadline must end the body too.
	defer context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()) })()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+httpecho.EchoPath, pr)
	if err != nil {
		return err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.rt.RoundTrip(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %v", errHTNoHeaders, err)
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get(httpecho.TagHeader) != want || resp.Proto != c.proto {
		return fmt.Errorf("%s %d from %q, want %s 200 from %s", resp.Proto, resp.StatusCode, resp.Header.Get(httpecho.TagHeader), c.proto, want)
	}
	for i, chunk := range chunks {
		if _, err := io.WriteString(pw, chunk); err != nil {
			return fmt.Errorf("write chunk %d: %v", i, err)
		}
		got := make([]byte, len(chunk))
		if _, err := io.ReadFull(resp.Body, got); err != nil {
			return fmt.Errorf("chunk %d (%d bytes) did not come back before the rest of the body was sent: %v", i, len(chunk), err)
		}
		if string(got) != chunk {
			return fmt.Errorf("chunk %d came back as %.40q", i, got)
		}
	}
	pw.Close()
	if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
		return fmt.Errorf("after the body ended: %.40q, %v; want EOF", rest, err)
	}
	return nil
}

// htTrailers: the backend's trailer reaches the caller.
func htTrailers(t *testing.T, c *htCaller) {
	for _, r := range htDestinations {
		a := c.get(httpecho.TrailerPath, r.header)
		switch err := c.landed(a, r.want, http.MethodGet, httpecho.TrailerPath); {
		case err != nil:
			t.Errorf("%s: %v", r.name, err)
		case a.trailer == r.want:
		default:
			// An HTTP/2 backend may send a length with its trailers; kept,
			// it would stop an HTTP/1.1 response from being chunked.
			t.Errorf("%s: trailer %s = %q (Content-Length %d), want %q", r.name, httpecho.TrailerHeader, a.trailer, a.contentLength, r.want)
		}
	}
}

// htPipelined writes every route's request in one write on a raw
// connection, then reads the answers in order.
func htPipelined(t *testing.T, hp *htPod) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := hp.dial(ctx, hp.front)
	if err != nil {
		t.Fatal(err)
	}
	if hp.opts.tls {
		tc := tls.Client(c, hp.clientTLS("http/1.1"))
		if err := tc.HandshakeContext(ctx); err != nil {
			t.Fatal(err)
		}
		c = tc
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var wire bytes.Buffer
	var reqs []*http.Request
	for i, r := range htRoutes {
		req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/pipelined/%d", hp.front, i), nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range r.header {
			req.Header[k] = v
		}
		req.Close = i == len(htRoutes)-1
		if err := req.Write(&wire); err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, req)
	}
	if _, err := c.Write(wire.Bytes()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for i, r := range htRoutes {
		resp, err := http.ReadResponse(br, reqs[i])
		if err != nil {
			t.Fatalf("response %d of %d (%s): %v", i+1, len(htRoutes), r.name, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		path := fmt.Sprintf("/pipelined/%d", i)
		if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get(httpecho.TagHeader) != r.want || string(body) != httpecho.Reply(r.want, http.MethodGet, path) {
			t.Errorf("response %d (%s): %d %q %v; want %s's %q", i+1, r.name, resp.StatusCode, body, err, r.want, httpecho.Reply(r.want, http.MethodGet, path))
		}
	}
	if n, err := br.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("after the last response (Connection: close): %d bytes, %v; want EOF", n, err)
	}
}

// htWebSocket echoes messages through each route's WebSocket.
func htWebSocket(t *testing.T, hp *htPod) {
	msgs := []string{"hello", strings.Repeat("w", 70_000), "bye"}
	for _, r := range htDestinations {
		t.Run(r.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			d := websocket.Dialer{NetDialContext: nsworld.Dialer(hp.w.Client), HandshakeTimeout: 5 * time.Second}
			url := "ws://" + hp.front + httpecho.WebSocketPath
			if hp.opts.tls {
				d.TLSClientConfig = hp.clientTLS("http/1.1")
				url = "wss://" + hp.front + httpecho.WebSocketPath
			}
			conn, resp, err := d.DialContext(ctx, url, r.header)
			if err != nil {
				t.Fatalf("dial %s: %v", url, err)
			}
			defer conn.Close()
			if got := resp.Header.Get(wsecho.TagHeader); got != r.want {
				t.Errorf("upgraded by %q, want %s", got, r.want)
			}
			conn.NetConn().SetDeadline(time.Now().Add(10 * time.Second))
			for i, m := range msgs {
				if err := conn.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
					t.Fatalf("send %d: %v", i, err)
				}
				_, reply, err := conn.ReadMessage()
				if err != nil {
					t.Fatalf("reply %d: %v", i, err)
				}
				if want := wsecho.Reply(r.want, m); string(reply) != want {
					t.Fatalf("reply %d: %.40q, want %.40q", i, reply, want)
				}
			}
			bye := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
			if err := conn.WriteControl(websocket.CloseMessage, bye, time.Now().Add(2*time.Second)); err != nil {
				t.Fatal(err)
			}
			if _, _, err := conn.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				t.Fatalf("closing handshake: %v, want the peer's normal closure", err)
			}
		})
	}
}

// htGRPC makes unary and bidirectional-streaming calls on one gRPC
// connection, each routed by its metadata.
func htGRPC(t *testing.T, hp *htPod) {
	var cfg *tls.Config
	if hp.opts.tls {
		cfg = hp.clientTLS()
	}
	conn, err := grpcecho.NewClient("passthrough:///"+hp.front, cfg, grpc.WithContextDialer(hp.dial))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	for _, r := range htDestinations {
		t.Run(r.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			md := metadata.MD{}
			for k, v := range r.header {
				md.Append(k, v...) // Append lower-cases the key
			}
			ctx = metadata.NewOutgoingContext(ctx, md)

			var header metadata.MD
			reply, err := grpcecho.Unary(ctx, conn, []byte("ping"), grpc.Header(&header))
			if err != nil {
				t.Fatalf("unary: %v", err)
			}
			if want := grpcecho.Reply(r.want, []byte("ping")); !bytes.Equal(reply, want) {
				t.Errorf("unary: %q, want %q", reply, want)
			}
			if got := header.Get(grpcecho.TagHeader); !slices.Equal(got, []string{r.want}) {
				t.Errorf("unary answered by %q, want %s", got, r.want)
			}

			msgs := [][]byte{[]byte("one"), bytes.Repeat([]byte("g"), 70_000), []byte("three")}
			replies, err := grpcecho.Bidi(ctx, conn, msgs, grpc.Header(&header))
			if err != nil {
				t.Fatalf("bidi: %v (after %d replies)", err, len(replies))
			}
			for i, m := range msgs {
				if want := grpcecho.Reply(r.want, m); !bytes.Equal(replies[i], want) {
					t.Errorf("bidi reply %d: %.40q, want %.40q", i, replies[i], want)
				}
			}
			if got := header.Get(grpcecho.TagHeader); !slices.Equal(got, []string{r.want}) {
				t.Errorf("bidi answered by %q, want %s", got, r.want)
			}
		})
	}
}

// htBlockingLocal is a workstation process whose /block requests never get
// an answer: they tell arrived, then wait until their caller goes away
// (ended) or the test ends. Other paths get alice's plain reply.
func htBlockingLocal(t *testing.T, h2c bool) (addr string, arrived, ended <-chan struct{}) {
	t.Helper()
	arrivedCh, endedCh := make(chan struct{}, 16), make(chan struct{}, 16)
	release := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(httpecho.TagHeader, "alice")
		if r.URL.Path != "/block" {
			fmt.Fprint(w, httpecho.Reply("alice", r.Method, r.URL.Path))
			return
		}
		arrivedCh <- struct{}{}
		select {
		case <-r.Context().Done():
			endedCh <- struct{}{}
		case <-release:
		}
	}), Protocols: new(http.Protocols), ReadHeaderTimeout: 5 * time.Second}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(h2c)
	ln := listen(t, "", "127.0.0.1:0")
	go srv.Serve(ln)
	t.Cleanup(func() { close(release); srv.Close() })
	return ln.Addr().String(), arrivedCh, endedCh
}

// TestHTTPClientDeath: alice's session dies while her process holds a
// request. The caller gets a 502 at once, never a hang; alice's later
// requests go to the app; bob's and the app's requests, on the same HTTP/2
// connection, carry on.
func TestHTTPClientDeath(t *testing.T) {
	t.Parallel()
	hp := htStartPod(t, htPodOptions{redirect: true})
	bobLocal := htServe(t, "", "127.0.0.1:0", "bob", nil)
	bob := hp.session(t, "bob@desk", tunnel.Config{})
	htJoin(t, bob, "web", bobLocal, htBobRules)
	alice := http.Header{"X-Dev": {"alice"}}
	const bound = 3 * time.Second

	for _, tc := range []struct {
		name     string
		caller   string
		localH2C bool // alice's process speaks h2c, so the agent reaches it in HTTP/2
	}{
		{"HTTP/1.1 caller, HTTP/1.1 local process", "http/1.1", false},
		{"h2c caller, h2c local process", "h2c", true},
		{"h2c caller, HTTP/1.1 local process", "h2c", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			relay0, fallback0 := hp.h2cStreams(t)
			defer func() {
				// The h2c relay passes on what goes to h2c processes, and hands
				// alice's requests for her HTTP/1.1 process to net/http's server.
				relay, fallback := hp.h2cStreams(t)
				h2c := tc.caller == "h2c"
				if (relay > relay0) != h2c || (fallback > fallback0) != (h2c && !tc.localH2C) {
					t.Errorf("h2c streams: %v relayed, %v through the fallback; want relayed %v, through the fallback %v",
						relay-relay0, fallback-fallback0, h2c, h2c && !tc.localH2C)
				}
			}()
			local, arrived, ended := htBlockingLocal(t, tc.localH2C)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn := hp.portForward(t)
			s, err := client.Open(ctx, conn, client.Options{ClientID: "alice", User: "alice@laptop", Log: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			htJoin(t, s, "web", local, htAliceRules)
			c := hp.htCaller(t, tc.caller)
			if err := c.landed(c.get("/before", alice), "alice", http.MethodGet, "/before"); err != nil {
				t.Fatalf("alice's intercept: %v", err)
			}

			held := make(chan htAnswer, 1)
			go func() { held <- c.get("/block", alice) }()
			select {
			case <-arrived:
			case a := <-held:
				t.Fatalf("the held request was answered before alice's process got it: %+v", a)
			case <-time.After(5 * time.Second):
				t.Fatal("the held request never reached alice's process")
			}
			// Over HTTP/2, requests for the app and for bob share the
			// caller's connection with the held one.
			type bystander struct {
				want   string
				answer chan htAnswer
			}
			var others []bystander
			if c.proto == "HTTP/2.0" {
				for _, r := range htRoutes {
					if r.want == "alice" || slices.ContainsFunc(others, func(b bystander) bool { return b.want == r.want }) {
						continue
					}
					b := bystander{r.want, make(chan htAnswer, 1)}
					go func() { b.answer <- c.get(httpecho.SlowPath+"?ms=1000", r.header) }()
					others = append(others, b)
				}
				time.Sleep(200 * time.Millisecond) // let them start
			}

			start := time.Now()
			conn.Close() // alice's workstation vanishes
			select {
			case a := <-held:
				took := time.Since(start)
				if a.err != nil || a.status != http.StatusBadGateway || !strings.HasPrefix(a.body, "detour: ") {
					t.Fatalf("held request: status %d, %v, %q; want the agent's 502", a.status, a.err, a.body)
				}
				t.Logf("held request: 502 %s after the session died: %q", took.Round(time.Millisecond), strings.TrimSpace(a.body))
			case <-time.After(bound):
				t.Fatalf("held request not answered within %s of the session's death", bound)
			}
			d := eventually(t, bound, "alice's header reaches the app", func() bool {
				return c.landed(c.get("/after", alice), "app", http.MethodGet, "/after") == nil
			})
			t.Logf("alice's header reached the app %s after the 502", d.Round(time.Millisecond))
			eventually(t, bound, "alice's intercept is no longer listed", func() bool {
				list, err := bob.List(context.Background())
				return err == nil && len(list) == 1 && list[0].Holder == "bob@desk"
			})
			for _, b := range others {
				if err := c.landed(<-b.answer, b.want, http.MethodGet, httpecho.SlowPath); err != nil {
					t.Errorf("a request for %s in flight on the same connection: %v", b.want, err)
				}
			}
			if c.proto == "HTTP/2.0" {
				if n := c.dials.Load(); n != 1 {
					t.Errorf("the caller needed %d connections, want 1: the 502 was a stream's, not the connection's", n)
				}
			}
			select {
			case <-ended:
			case <-time.After(bound):
				t.Errorf("alice's process still holds the request %s after her tunnel closed", bound)
			}
		})
	}
}
