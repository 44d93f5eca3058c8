package proxynet

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
	"golang.org/x/net/proxy"

	"github.com/detour-dev/detour/tunnel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Every connection in these tests stays on loopback: the "cluster"
// addresses (10.96.0.0/16, 169.254.169.254) exist only in fakeNet's table,
// which dials their loopback stand-ins.

// fakeNet is the routing under test: a destination in routes is dialled at
// its loopback stand-in, a denied one is refused as the agent refuses it,
// a loopback one is dialled as it is, and anything else fails without
// leaving the machine.
type fakeNet struct {
	routes map[netip.AddrPort]string
	denied map[netip.Addr]bool

	mu      sync.Mutex
	dialled []netip.AddrPort
}

func (f *fakeNet) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	f.mu.Lock()
	f.dialled = append(f.dialled, dst)
	f.mu.Unlock()
	if f.denied[dst.Addr()] {
		return nil, fmt.Errorf("dial tcp %s through the pod: %s is a link-local address: %w", dst, dst.Addr(), tunnel.ErrDialDenied)
	}
	addr, ok := f.routes[dst]
	if !ok && dst.Addr().IsLoopback() {
		addr, ok = dst.String(), true
	}
	if !ok {
		return nil, fmt.Errorf("test: %s is not in the fake network: %w", dst, tunnel.ErrDialUnreachable)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

func (f *fakeNet) destinations() []netip.AddrPort {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]netip.AddrPort(nil), f.dialled...)
}

type fixture struct {
	px      *Proxies
	net     *fakeNet
	backend *httptest.Server // plain HTTP, reports what it received
	tlsWeb  *httptest.Server
	cancel  context.CancelFunc
}

const testPassword = "s3cret"

func startProxies(t *testing.T, password string, handshake time.Duration) *fixture {
	t.Helper()
	greeter := serveGreeter(t)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "host=%s uri=%s proxy-auth=%q", r.Host, r.RequestURI, r.Header.Get("Proxy-Authorization"))
	}))
	t.Cleanup(backend.Close)
	tlsWeb := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls host=%s", r.Host)
	}))
	t.Cleanup(tlsWeb.Close)
	fn := &fakeNet{
		routes: map[netip.AddrPort]string{
			netip.MustParseAddrPort("10.96.0.10:7000"): greeter,
			netip.MustParseAddrPort("10.96.0.10:8080"): backend.Listener.Addr().String(),
			netip.MustParseAddrPort("10.96.0.11:443"):  tlsWeb.Listener.Addr().String(),
			netip.MustParseAddrPort("10.96.0.12:7000"): closedPort(t),
		},
		denied: map[netip.Addr]bool{netip.MustParseAddr("169.254.169.254"): true},
	}
	dns := &fakeDNS{records: map[string][]string{
		"db.shop.svc.cluster.local.":    {"10.96.0.10"},
		"web.shop.svc.cluster.local.":   {"10.96.0.11"},
		"down.shop.svc.cluster.local.":  {"10.96.0.12"},
		"multi.shop.svc.cluster.local.": {"10.96.0.12", "10.96.0.10"},
		"meta.shop.svc.cluster.local.":  {"169.254.169.254"},
	}}
	ctx, cancel := context.WithCancel(context.Background())
	px, err := Serve(ctx, Config{
		Dialer: fn, Resolver: &StubResolver{Resolve: dns.Resolve, Search: podSearch, Ndots: 5},
		Password: password, HandshakeTimeout: handshake, ConnectTimeout: 5 * time.Second, Log: zaptest.NewLogger(t),
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-px.Done() })
	return &fixture{px: px, net: fn, backend: backend, tlsWeb: tlsWeb, cancel: cancel}
}

// serveGreeter says hello, then echoes.
func serveGreeter(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				fmt.Fprintf(c, "hello\n")
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// closedPort is a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// expectGreeting reads the greeter's hello and checks that it echoes.
func expectGreeting(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if line, err := br.ReadString('\n'); err != nil || line != "hello\n" {
		t.Fatalf("greeting %q, %v", line, err)
	}
	fmt.Fprintf(c, "ping\n")
	if line, err := br.ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("echo %q, %v", line, err)
	}
}

func TestEnv(t *testing.T) {
	p := &Proxies{SOCKS: netip.MustParseAddrPort("127.0.0.1:1080"), HTTP: netip.MustParseAddrPort("127.0.0.1:3128")}
	env := p.Env()
	for k, want := range map[string]string{
		"ALL_PROXY": "socks5h://127.0.0.1:1080", "all_proxy": "socks5h://127.0.0.1:1080",
		"HTTP_PROXY": "http://127.0.0.1:3128", "HTTPS_PROXY": "http://127.0.0.1:3128",
		"http_proxy": "http://127.0.0.1:3128", "https_proxy": "http://127.0.0.1:3128",
		"NO_PROXY": "localhost,127.0.0.1,::1", "no_proxy": "localhost,127.0.0.1,::1",
	} {
		if env[k] != want {
			t.Errorf("%s=%q, want %q", k, env[k], want)
		}
	}
	p.password = "pw"
	if env := p.Env(); env["ALL_PROXY"] != "socks5h://detour:pw@127.0.0.1:1080" || env["HTTPS_PROXY"] != "http://detour:pw@127.0.0.1:3128" {
		t.Errorf("with a password: %v", env)
	}
}

func TestSOCKS5ResolvesThroughTheResolver(t *testing.T) {
	f := startProxies(t, testPassword, 0)
	d, err := proxy.SOCKS5("tcp", f.px.SOCKS.String(), &proxy.Auth{User: User, Password: testPassword}, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"db:7000", "db.shop:7000", "db.shop.svc.cluster.local:7000", "multi:7000", "10.96.0.10:7000"} {
		c, err := d.(proxy.ContextDialer).DialContext(context.Background(), "tcp", name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		expectGreeting(t, c, bufio.NewReader(c))
		c.Close()
	}
	// "multi" has a refused address first: the proxy went on to the next.
	got := f.net.destinations()
	if got[0] != netip.MustParseAddrPort("10.96.0.10:7000") {
		t.Errorf("db:7000 was dialled as %v, want the cluster address the resolver gave", got[0])
	}
	if fmt.Sprint(got[3:5]) != "[10.96.0.12:7000 10.96.0.10:7000]" {
		t.Errorf("multi: dialled %v, want each address in turn", got[3:5])
	}
}

func TestSOCKS5Failures(t *testing.T) {
	f := startProxies(t, testPassword, 300*time.Millisecond)
	addr := f.px.SOCKS.String()
	auth := &[2]string{User, testPassword}
	for _, tc := range []struct {
		host string
		cmd  byte
		want byte
	}{
		{"nope", 1, 4},            // the name resolves to nothing: host unreachable
		{"down", 1, 5},            // the destination refuses: connection refused
		{"meta", 1, 2},            // the agent refuses: not allowed by the rules
		{"169.254.169.254", 1, 2}, // by address, too
		{"db", 3, 7},              // UDP ASSOCIATE: command not supported
		{"db", 2, 7},              // BIND
		{"127.0.0.1", 1, 2},       // the proxy itself (port below)
	} {
		port := 7000
		if tc.host == "127.0.0.1" {
			port = int(f.px.HTTP.Port())
		}
		if rep := socksRequest(t, addr, auth, tc.host, port, tc.cmd); rep != tc.want {
			t.Errorf("%s cmd %d: reply %d, want %d", tc.host, tc.cmd, rep, tc.want)
		}
	}
	t.Run("wrong password", func(t *testing.T) {
		if rep := socksRequest(t, addr, &[2]string{User, "guess"}, "db", 7000, 1); rep != authFailed {
			t.Errorf("got %d, want the authentication to fail", rep)
		}
	})
	t.Run("no credentials", func(t *testing.T) {
		if rep := socksRequest(t, addr, nil, "db", 7000, 1); rep != authFailed {
			t.Errorf("got %d, want no acceptable method", rep)
		}
	})
	for name, greeting := range map[string][]byte{
		"socks4":  {4, 1, 0, 80, 10, 96, 0, 10, 0},
		"garbage": []byte("GET / HTTP/1.1\r\n\r\n"),
		"silence": nil, // closed after the handshake timeout
	} {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, _ = c.Write(greeting)
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			start := time.Now()
			if _, err := io.ReadAll(c); err != nil || time.Since(start) > 3*time.Second {
				t.Errorf("want the proxy to close promptly: %v after %s", err, time.Since(start))
			}
		})
	}
}

const authFailed = 0xff

// socksRequest speaks SOCKS5 by hand and returns the reply code (or
// authFailed when the greeting or authentication was refused).
func socksRequest(t *testing.T, addr string, auth *[2]string, host string, port int, cmd byte) byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	method := byte(0)
	if auth != nil {
		method = 2
	}
	_, _ = c.Write([]byte{5, 1, method})
	b := make([]byte, 2)
	if _, err := io.ReadFull(br, b); err != nil || b[1] != method {
		return authFailed
	}
	if auth != nil {
		msg := append([]byte{1, byte(len(auth[0]))}, auth[0]...)
		msg = append(append(msg, byte(len(auth[1]))), auth[1]...)
		_, _ = c.Write(msg)
		if _, err := io.ReadFull(br, b); err != nil || b[1] != 0 {
			return authFailed
		}
	}
	req := []byte{5, cmd, 0}
	if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
		req = append(append(req, 1), a.AsSlice()...)
	} else {
		req = append(append(req, 3, byte(len(host))), host...)
	}
	_, _ = c.Write(append(req, byte(port>>8), byte(port)))
	hdr := make([]byte, 4)
	if _, err := io.ReadFull(br, hdr); err != nil {
		t.Fatalf("%s: no reply: %v", host, err)
	}
	return hdr[1]
}

// httpConnect sends CONNECT target by hand.
func httpConnect(t *testing.T, proxyAddr, target, auth string) (*http.Response, net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", target, target)
	if auth != "" {
		fmt.Fprintf(c, "Proxy-Authorization: Basic %s\r\n", base64.StdEncoding.EncodeToString([]byte(auth)))
	}
	fmt.Fprintf(c, "\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	return resp, c, br
}

func body(r *http.Response) string {
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	return string(b)
}

func TestHTTPConnect(t *testing.T) {
	f := startProxies(t, testPassword, 0)
	resp, c, br := httpConnect(t, f.px.HTTP.String(), "db:7000", User+":"+testPassword)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT db:7000: %s %s", resp.Status, body(resp))
	}
	expectGreeting(t, c, br)

	// HTTPS through CONNECT, as a program honouring HTTPS_PROXY does it.
	pool := f.tlsWeb.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	tr := &http.Transport{
		Proxy:           http.ProxyURL(&url.URL{Scheme: "http", User: url.UserPassword(User, testPassword), Host: f.px.HTTP.String()}),
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "example.com"},
	}
	defer tr.CloseIdleConnections()
	r, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://web:443/")
	if err != nil {
		t.Fatal(err)
	}
	if got := body(r); got != "tls host=web:443" && got != "tls host=web" {
		t.Errorf("https through CONNECT: %q", got)
	}
}

func TestHTTPConnectFailures(t *testing.T) {
	f := startProxies(t, testPassword, 0)
	addr, auth := f.px.HTTP.String(), User+":"+testPassword
	for _, tc := range []struct {
		target, auth string
		status       int
		body         string
	}{
		{"nope:7000", auth, 502, "nope:7000: the name does not resolve"},
		{"down:7000", auth, 502, "connection refused"},
		{"meta:80", auth, 403, "link-local"},
		{"db", auth, 400, "not host:port"},
		{"db:0", auth, 400, "port 1..65535"},
		{fmt.Sprintf("127.0.0.1:%d", f.px.SOCKS.Port()), auth, 508, "this proxy"},
		{"db:7000", "", 407, "Proxy-Authorization required"},
		{"db:7000", User + ":guess", 407, "Proxy-Authorization required"},
	} {
		resp, _, _ := httpConnect(t, addr, tc.target, tc.auth)
		if b := body(resp); resp.StatusCode != tc.status || !strings.Contains(b, tc.body) {
			t.Errorf("CONNECT %s: %d %q, want %d with %q", tc.target, resp.StatusCode, b, tc.status, tc.body)
		}
	}
}

func TestHTTPForward(t *testing.T) {
	f := startProxies(t, testPassword, 0)
	proxyURL := &url.URL{Scheme: "http", User: url.UserPassword(User, testPassword), Host: f.px.HTTP.String()}
	tr := &http.Transport{Proxy: http.ProxyURL(proxyURL)}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	r, err := client.Get("http://db:8080/orders?id=7")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := body(r), `host=db:8080 uri=/orders?id=7 proxy-auth=""`; got != want {
		t.Errorf("forwarded: %q, want %q (the proxy's credentials must not go upstream)", got, want)
	}
	if d := f.net.destinations(); len(d) != 1 || d[0] != netip.MustParseAddrPort("10.96.0.10:8080") {
		t.Errorf("dialled %v, want 10.96.0.10:8080", d)
	}
	r, err = client.Get("http://nope:8080/")
	if err != nil {
		t.Fatal(err)
	}
	if b := body(r); r.StatusCode != http.StatusBadGateway || !strings.Contains(b, "does not resolve") {
		t.Errorf("unresolvable: %d %q", r.StatusCode, b)
	}

	// Not a proxy request: a clear 400.
	c, err := net.Dial("tcp", f.px.HTTP.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /orders HTTP/1.1\r\nHost: db\r\nProxy-Authorization: Basic %s\r\n\r\n", base64.StdEncoding.EncodeToString([]byte(User+":"+testPassword)))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if b := body(resp); resp.StatusCode != http.StatusBadRequest || !strings.Contains(b, "absolute URI") {
		t.Errorf("origin-form request: %d %q", resp.StatusCode, b)
	}
}

func TestHTTPHeaderTimeout(t *testing.T) {
	f := startProxies(t, "", 300*time.Millisecond)
	c, err := net.Dial("tcp", f.px.HTTP.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT db:7000 HTTP/1.1\r\n") // and never the rest
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	_, _ = io.ReadAll(c)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("an unfinished header held the connection for %s", took)
	}
}

// TestStop: cancelling the context closes the listeners and every relay.
func TestStop(t *testing.T) {
	f := startProxies(t, "", 0)
	d, _ := proxy.SOCKS5("tcp", f.px.SOCKS.String(), nil, proxy.Direct)
	sc, err := d.Dial("tcp", "db:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	sbr := bufio.NewReader(sc)
	expectGreeting(t, sc, sbr)
	resp, hc, hbr := httpConnect(t, f.px.HTTP.String(), "db:7000", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatal(resp.Status)
	}
	expectGreeting(t, hc, hbr)
	f.cancel()
	select {
	case <-f.px.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the proxies did not stop")
	}
	for name, br := range map[string]*bufio.Reader{"socks": sbr, "connect": hbr} {
		if _, err := br.ReadString('\n'); err == nil {
			t.Errorf("%s relay still open after the stop", name)
		}
	}
	for _, a := range []netip.AddrPort{f.px.SOCKS, f.px.HTTP} {
		if c, err := net.DialTimeout("tcp", a.String(), time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts", a)
		}
	}
}

func TestServeNeedsDialerAndResolver(t *testing.T) {
	if _, err := Serve(context.Background(), Config{}); err == nil {
		t.Error("Serve without a Dialer and a Resolver succeeded")
	}
}
