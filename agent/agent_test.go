package agent_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/detour-dev/detour/agent"
	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/tunnel"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// lineServer answers every connection with one line naming itself, then
// echoes whatever it reads.
func lineServer(t *testing.T, addr, name string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				fmt.Fprintf(c, "%s\n", name)
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln
}

func freePort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

type world struct {
	agent   *agent.Agent
	appPort uint16
	front   string // where cluster clients connect (the port-rename listener)
	tunnel  string
}

func startAgent(t *testing.T, mutate func(*agent.Config)) *world {
	t.Helper()
	app := lineServer(t, "127.0.0.1:0", "app")
	appPort := uint16(app.Addr().(*net.TCPAddr).Port)
	cfg := agent.DefaultConfig()
	cfg.TunnelAddr = "127.0.0.1:0"
	cfg.HealthAddr = "127.0.0.1:0"
	cfg.MetricsAddr = "127.0.0.1:0"
	cfg.Listeners = []agent.PortMap{{Listen: freePort(t), App: appPort}}
	cfg.ShutdownGrace = 2 * time.Second
	if mutate != nil {
		mutate(&cfg)
		if len(cfg.Listeners) > 0 {
			appPort = cfg.Listeners[0].App
		}
	}
	a, err := agent.New(cfg, zaptest.NewLogger(t).Named("agent"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent Run: %v", err)
		}
	})
	select {
	case <-a.Ready():
	case err := <-done:
		t.Fatalf("agent failed to start: %v", err)
	}
	return &world{agent: a, appPort: appPort, front: a.Addrs().Listeners[appPort].String(), tunnel: a.Addrs().Tunnel.String()}
}

// whoAnswers connects as a cluster client would and returns the first line.
func whoAnswers(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "dial error: " + err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "closed"
	}
	return strings.TrimSpace(line)
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func openClient(t *testing.T, w *world, user string, cfg tunnel.Config) (*client.Session, net.Conn) {
	t.Helper()
	return openClientAs(t, w, client.Options{ClientID: user + "-id", User: user, Tunnel: cfg})
}

// openClientAs opens a session with opts (a new secret when it has none).
func openClientAs(t *testing.T, w *world, opts client.Options) (*client.Session, net.Conn) {
	t.Helper()
	conn, err := net.Dial("tcp", w.tunnel)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	opts.Log = zaptest.NewLogger(t).Named(opts.User)
	s, err := client.Open(ctx, conn, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, conn
}

func TestPassthroughWithoutIntercept(t *testing.T) {
	w := startAgent(t, nil)
	if got := whoAnswers(t, w.front); got != "app" {
		t.Fatalf("got %q, want app", got)
	}
}

func TestInterceptLeaveAndConflicts(t *testing.T) {
	w := startAgent(t, nil)
	laptop := lineServer(t, "127.0.0.1:0", "workstation")
	ctx := context.Background()

	alice, _ := openClient(t, w, "alice@laptop", tunnel.Config{})
	if got := alice.Agent().Ports; len(got) != 1 || got[0].Port != w.appPort {
		t.Fatalf("agent announced ports %+v, want [%d]", got, w.appPort)
	}
	list, err := alice.CreateIntercept(ctx, client.InterceptSpec{Name: "hello", Port: w.appPort, LocalAddr: laptop.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Holder != "alice@laptop" {
		t.Fatalf("list after create = %+v", list)
	}
	if got := whoAnswers(t, w.front); got != "workstation" {
		t.Fatalf("intercepted: got %q, want workstation", got)
	}

	bob, _ := openClient(t, w, "bob@desk", tunnel.Config{})
	_, err = bob.CreateIntercept(ctx, client.InterceptSpec{Name: "mine", Port: w.appPort, LocalAddr: "127.0.0.1:1"})
	if !errors.Is(err, tunnel.ErrAlreadyIntercepted) || !strings.Contains(err.Error(), "alice@laptop") {
		t.Fatalf("second global intercept: err = %v, want ErrAlreadyIntercepted naming alice@laptop", err)
	}
	_, err = bob.CreateIntercept(ctx, client.InterceptSpec{Name: "other", Port: 1, LocalAddr: "127.0.0.1:1"})
	if !errors.Is(err, tunnel.ErrPortNotServed) || !strings.Contains(err.Error(), fmt.Sprint(w.appPort)) {
		t.Fatalf("unserved port: err = %v, want ErrPortNotServed listing %d", err, w.appPort)
	}
	_, err = bob.CreateIntercept(ctx, client.InterceptSpec{Name: "h", Port: w.appPort, Mechanism: "grpc-web", LocalAddr: "127.0.0.1:1"})
	if !errors.Is(err, tunnel.ErrUnsupportedMechanism) || !strings.Contains(err.Error(), `not "grpc-web"`) {
		t.Fatalf("unsupported mechanism: err = %v", err)
	}
	if _, err := bob.RemoveIntercept(ctx, "hello"); !errors.Is(err, tunnel.ErrInterceptNotFound) {
		t.Fatalf("bob removing alice's intercept: err = %v, want ErrInterceptNotFound", err)
	}

	if _, err := alice.RemoveIntercept(ctx, "hello"); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "app answers after leave", func() bool { return whoAnswers(t, w.front) == "app" })

	// The port is free again: bob can take it now.
	if _, err := bob.CreateIntercept(ctx, client.InterceptSpec{Name: "mine", Port: w.appPort, LocalAddr: laptop.Addr().String()}); err != nil {
		t.Fatalf("bob after alice left: %v", err)
	}
}

func TestClientDeathFailsOpen(t *testing.T) {
	w := startAgent(t, nil)
	laptop := lineServer(t, "127.0.0.1:0", "workstation")
	s, conn := openClient(t, w, "alice@laptop", tunnel.Config{})
	if _, err := s.CreateIntercept(context.Background(), client.InterceptSpec{Name: "hello", Port: w.appPort, LocalAddr: laptop.Addr().String()}); err != nil {
		t.Fatal(err)
	}
	if got := whoAnswers(t, w.front); got != "workstation" {
		t.Fatalf("got %q", got)
	}
	// No goodbye: the connection just drops, as when the client is killed.
	conn.(*net.TCPConn).SetLinger(0)
	conn.Close()
	eventually(t, time.Second, "app answers after the client died", func() bool { return whoAnswers(t, w.front) == "app" })
}

// silentProxy forwards bytes until frozen, then holds the connection open
// and forwards nothing: a laptop that went to sleep.
type silentProxy struct {
	ln     net.Listener
	mu     sync.Mutex
	frozen bool
	conns  []net.Conn
}

func newSilentProxy(t *testing.T, target string) *silentProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &silentProxy{ln: ln}
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); p.copy(u, c) }()
			go func() { defer wg.Done(); p.copy(c, u) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		wg.Wait()
	})
	return p
}

func (p *silentProxy) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		frozen := p.frozen
		p.mu.Unlock()
		if frozen {
			continue
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (p *silentProxy) freeze() { p.mu.Lock(); p.frozen = true; p.mu.Unlock() }

func TestSilentClientIsDroppedByKeepalive(t *testing.T) {
	short := tunnel.DefaultConfig()
	short.KeepAliveInterval = 100 * time.Millisecond
	short.WriteTimeout = 200 * time.Millisecond
	w := startAgent(t, func(c *agent.Config) { c.Tunnel = short })
	laptop := lineServer(t, "127.0.0.1:0", "workstation")
	proxy := newSilentProxy(t, w.tunnel)
	w2 := *w
	w2.tunnel = proxy.ln.Addr().String()
	s, _ := openClient(t, &w2, "alice@laptop", short)
	if _, err := s.CreateIntercept(context.Background(), client.InterceptSpec{Name: "hello", Port: w.appPort, LocalAddr: laptop.Addr().String()}); err != nil {
		t.Fatal(err)
	}
	if got := whoAnswers(t, w.front); got != "workstation" {
		t.Fatalf("got %q", got)
	}
	proxy.freeze()
	start := time.Now()
	eventually(t, 2*time.Second, "app answers after the client went silent", func() bool { return whoAnswers(t, w.front) == "app" })
	t.Logf("silent client dropped after %s (keepalive %s + timeout %s)", time.Since(start).Round(time.Millisecond), short.KeepAliveInterval, short.WriteTimeout)
}

func TestLocalTargetDownClosesConnectionSessionSurvives(t *testing.T) {
	w := startAgent(t, nil)
	s, _ := openClient(t, w, "alice@laptop", tunnel.Config{})
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	if _, err := s.CreateIntercept(context.Background(), client.InterceptSpec{Name: "hello", Port: w.appPort, LocalAddr: dead}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if got := whoAnswers(t, w.front); got != "closed" {
		t.Fatalf("got %q, want the connection closed", got)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("closing took %s", d)
	}
	if _, err := s.Ping(context.Background()); err != nil {
		t.Fatalf("session did not survive: %v", err)
	}
	// Start the local server on that port: the same intercept now works.
	lineServer(t, dead, "workstation")
	if got := whoAnswers(t, w.front); got != "workstation" {
		t.Fatalf("after local server started: got %q", got)
	}
}

func TestRefusesOtherProtocolVersionAndGarbage(t *testing.T) {
	w := startAgent(t, nil)

	// Garbage: not even yamux. The agent drops it and keeps serving.
	g, err := net.Dial("tcp", w.tunnel)
	if err != nil {
		t.Fatal(err)
	}
	g.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	g.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadAll(g); err != nil {
		t.Fatalf("agent did not close a garbage connection: %v", err)
	}
	g.Close()

	// A yamux session whose hello carries another version.
	conn, err := net.Dial("tcp", w.tunnel)
	if err != nil {
		t.Fatal(err)
	}
	ys, err := tunnel.Client(conn, tunnel.DefaultConfig(), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ys.Close()
	ctrl, err := ys.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	f, _ := tunnel.NewFrame(tunnel.FrameHello, 1, tunnel.Hello{Version: 99, ClientID: "c", User: "u@h"})
	if err := tunnel.WriteFrame(ctrl, f); err != nil {
		t.Fatal(err)
	}
	reply, err := tunnel.ReadFrame(ctrl)
	if err != nil {
		t.Fatal(err)
	}
	rerr := tunnel.AsError(reply)
	if !errors.Is(rerr, tunnel.ErrVersionMismatch) || !strings.Contains(rerr.Error(), "version 99") {
		t.Fatalf("got %v, want a version mismatch naming version 99", rerr)
	}

	// An oversized frame after a good hello: refused with an error, the
	// session closed, and the agent goes on serving.
	conn3, err := net.Dial("tcp", w.tunnel)
	if err != nil {
		t.Fatal(err)
	}
	ys3, err := tunnel.Client(conn3, tunnel.DefaultConfig(), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ys3.Close()
	ctrl3, _ := ys3.OpenStream()
	hello, _ := tunnel.NewFrame(tunnel.FrameHello, 1, tunnel.Hello{Version: tunnel.ProtocolVersion, ClientID: "c", User: "u@h", Secret: client.NewSecret()})
	tunnel.WriteFrame(ctrl3, hello)
	if ack, err := tunnel.ReadFrame(ctrl3); err != nil || ack.Type != tunnel.FrameHelloAck {
		t.Fatalf("hello: %v %v", ack.Type, err)
	}
	ctrl3.Write([]byte{byte(tunnel.FrameListIntercepts), 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff})
	reply3, err := tunnel.ReadFrame(ctrl3)
	if err != nil || !errors.Is(tunnel.AsError(reply3), tunnel.ErrBadRequest) {
		t.Fatalf("oversized frame: reply %v %v, want a bad-request error", reply3.Type, err)
	}
	eventually(t, time.Second, "session closed after a protocol error", ys3.IsClosed)

	if got := whoAnswers(t, w.front); got != "app" {
		t.Fatalf("agent stopped serving after bad clients: %q", got)
	}
	if _, err := openClientPing(t, w); err != nil {
		t.Fatalf("good client after bad ones: %v", err)
	}
}

// TestRefusesHellosThatProveNothingOrCarryEscapes: a hello without a
// secret (nothing to prove a reconnect with), and one whose user label
// carries a terminal escape sequence (it would reach other developers'
// terminals in conflict messages and lists), are refused with a reason.
func TestRefusesHellosThatProveNothingOrCarryEscapes(t *testing.T) {
	w := startAgent(t, nil)
	for _, h := range []tunnel.Hello{
		{Version: tunnel.ProtocolVersion, ClientID: "c", User: "u@h"},
		{Version: tunnel.ProtocolVersion, ClientID: "c", User: "\x1b]0;owned\x07alice@laptop", Secret: client.NewSecret()},
	} {
		conn, err := net.Dial("tcp", w.tunnel)
		if err != nil {
			t.Fatal(err)
		}
		ys, err := tunnel.Client(conn, tunnel.DefaultConfig(), zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		ctrl, _ := ys.OpenStream()
		f, _ := tunnel.NewFrame(tunnel.FrameHello, 1, h)
		tunnel.WriteFrame(ctrl, f)
		reply, err := tunnel.ReadFrame(ctrl)
		if err != nil || reply.Type != tunnel.FrameError || !errors.Is(tunnel.AsError(reply), tunnel.ErrBadRequest) {
			t.Errorf("hello %+v: reply %v, %v; want a bad-request error", h, reply.Type, err)
		}
		ys.Close()
	}
}

func openClientPing(t *testing.T, w *world) (time.Duration, error) {
	s, _ := openClient(t, w, "carol@host", tunnel.Config{})
	return s.Ping(context.Background())
}

func TestDialPod(t *testing.T) {
	w := startAgent(t, nil)
	side := lineServer(t, "127.0.0.1:0", "sidecar")
	s, _ := openClient(t, w, "alice@laptop", tunnel.Config{})
	c, err := s.DialPod(context.Background(), uint16(side.Addr().(*net.TCPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	line, _ := bufio.NewReader(c).ReadString('\n')
	if strings.TrimSpace(line) != "sidecar" {
		t.Fatalf("got %q", line)
	}
	if _, err := s.DialPod(context.Background(), freePort(t)); err == nil || !strings.Contains(err.Error(), "nothing listens") {
		t.Fatalf("dial of a closed pod port: err = %v", err)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	w := startAgent(t, nil)
	whoAnswers(t, w.front)
	get := func(addr, path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get(w.agent.Addrs().Health.String(), "/readyz"); code != 200 {
		t.Fatalf("readyz = %d", code)
	}
	code, body := get(w.agent.Addrs().Metrics.String(), "/metrics")
	if code != 200 || !strings.Contains(body, `detour_agent_connections_total{route="app"} 1`) || !strings.Contains(body, "detour_agent_intercepts_active") {
		t.Fatalf("metrics (%d) missing expected series:\n%s", code, body)
	}
}

// TestShutdownFailsOpenAndLetsInFlightConnectionsFinish: once shutdown
// starts, intercepts are given back and the tunnel closes, but the app's
// port keeps answering (traffic may arrive until the endpoints update) and
// connections already open keep working; the agent stops once they end.
func TestShutdownFailsOpenAndLetsInFlightConnectionsFinish(t *testing.T) {
	app := lineServer(t, "127.0.0.1:0", "app")
	laptop := lineServer(t, "127.0.0.1:0", "workstation")
	appPort := uint16(app.Addr().(*net.TCPAddr).Port)
	cfg := agent.DefaultConfig()
	cfg.TunnelAddr, cfg.HealthAddr, cfg.MetricsAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Listeners = []agent.PortMap{{Listen: freePort(t), App: appPort}}
	cfg.ShutdownGrace = 3 * time.Second
	a, err := agent.New(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	<-a.Ready()
	w := &world{agent: a, appPort: appPort, front: a.Addrs().Listeners[appPort].String(), tunnel: a.Addrs().Tunnel.String()}
	s, _ := openClient(t, w, "alice@laptop", tunnel.Config{})
	if _, err := s.CreateIntercept(context.Background(), client.InterceptSpec{Name: "hello", Port: appPort, LocalAddr: laptop.Addr().String()}); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", w.front)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if line, _ := r.ReadString('\n'); line != "workstation\n" {
		t.Fatalf("before shutdown: %q", line)
	}

	cancel()
	time.Sleep(100 * time.Millisecond)
	// While the pod terminates, connections still arriving (kube-proxy lags
	// behind the deletion) go to the intercepting client, whose session is up.
	if got := whoAnswers(t, w.front); got != "workstation" {
		t.Fatalf("a new connection during shutdown got %q, want the workstation (its session is up)", got)
	}
	if tc, err := net.DialTimeout("tcp", w.tunnel, 200*time.Millisecond); err == nil {
		tc.Close()
		t.Fatal("tunnel still accepts clients after shutdown began")
	}
	fmt.Fprintf(c, "still here\n")
	line, err := r.ReadString('\n')
	if err != nil || line != "still here\n" {
		t.Fatalf("in-flight connection broken during grace: %q %v", line, err)
	}
	c.Close()
	// A client that is gone fails open to the app, shutdown or not.
	s.Close()
	eventually(t, 2*time.Second, "the app answers once the client is gone", func() bool { return whoAnswers(t, w.front) == "app" })
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("agent did not stop once the last connection ended")
	}
}

func TestConfigValidate(t *testing.T) {
	base := agent.DefaultConfig()
	base.Listeners = []agent.PortMap{{Listen: 8081, App: 8080}}
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(*agent.Config){
		"tunnel on all interfaces": func(c *agent.Config) { c.TunnelAddr = "0.0.0.0:9900" },
		"tunnel not an address":    func(c *agent.Config) { c.TunnelAddr = "localhost" },
		"nothing to listen on":     func(c *agent.Config) { c.Listeners = nil },
		"redirect without ports":   func(c *agent.Config) { c.RedirectAddr = ":15001" },
		"app port twice":           func(c *agent.Config) { c.RedirectAddr = ":15001"; c.RedirectPorts = []uint16{8080} },
		"listen port zero":         func(c *agent.Config) { c.Listeners = []agent.PortMap{{Listen: 0, App: 1}} },
	}
	for name, mutate := range cases {
		c := base
		mutate(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestEnvironmentReportsTheAppsVariablesOnly(t *testing.T) {
	t.Setenv("DB_URL", "postgres://db:5432/app")
	t.Setenv("POD_NAME", "hello-abc")
	t.Setenv("DETOUR_INTERNAL", "x")
	w := startAgent(t, nil)
	s, _ := openClient(t, w, "alice@laptop", tunnel.Config{})
	env, err := s.Environment(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if env["DB_URL"] != "postgres://db:5432/app" {
		t.Fatalf("DB_URL = %q", env["DB_URL"])
	}
	for _, own := range []string{"POD_NAME", "DETOUR_INTERNAL", "PATH"} {
		if _, ok := env[own]; ok {
			t.Errorf("agent's own variable %s reported as the app's", own)
		}
	}
}

// TestReconnectingClientTakesItsInterceptBack: a client whose port-forward
// dropped reconnects before the agent noticed the old session died; the
// same client (the same secret) gets its intercept back. Anyone else does
// not — not even with alice's client id and user, which anyone can read
// or guess (the list shows the user): the secret is the proof.
func TestReconnectingClientTakesItsInterceptBack(t *testing.T) {
	w := startAgent(t, nil)
	first := lineServer(t, "127.0.0.1:0", "first-session")
	second := lineServer(t, "127.0.0.1:0", "second-session")
	ctx := context.Background()
	alice := client.Options{ClientID: "alice-id", User: "alice@laptop", Secret: client.NewSecret()}
	old, _ := openClientAs(t, w, alice)
	if _, err := old.CreateIntercept(ctx, client.InterceptSpec{Name: "hello", Port: w.appPort, LocalAddr: first.Addr().String()}); err != nil {
		t.Fatal(err)
	}
	again, _ := openClientAs(t, w, alice) // the same daemon, reconnected
	if _, err := again.CreateIntercept(ctx, client.InterceptSpec{Name: "hello", Port: w.appPort, LocalAddr: second.Addr().String()}); err != nil {
		t.Fatalf("the same client reconnecting was refused: %v", err)
	}
	if got := whoAnswers(t, w.front); got != "second-session" {
		t.Fatalf("got %q, want the new session", got)
	}
	old.Close() // the old session ending must not take the intercept with it
	time.Sleep(100 * time.Millisecond)
	if got := whoAnswers(t, w.front); got != "second-session" {
		t.Fatalf("after the old session ended: %q", got)
	}
	// mallory claims alice's labels exactly, without her secret.
	impostor := alice
	impostor.Secret = client.NewSecret()
	mallory, _ := openClientAs(t, w, impostor)
	list, err := mallory.List(ctx)
	if err != nil || len(list) != 1 || list[0].Yours || list[0].Holder != "alice@laptop" {
		t.Fatalf("mallory's list: %+v, %v", list, err)
	}
	if _, err := mallory.CreateIntercept(ctx, client.InterceptSpec{Name: "hello", Port: w.appPort, LocalAddr: first.Addr().String()}); !errors.Is(err, tunnel.ErrAlreadyIntercepted) {
		t.Fatalf("alice's labels without her secret took the intercept over: %v", err)
	}
	if got := whoAnswers(t, w.front); got != "second-session" {
		t.Fatalf("after the takeover attempt: %q, want alice's session still", got)
	}
	if list, err := again.List(ctx); err != nil || len(list) != 1 || !list[0].Yours {
		t.Fatalf("alice's list: %+v, %v", list, err)
	}
	// alice's second session was a reconnect; mallory's was not.
	resp, err := http.Get("http://" + w.agent.Addrs().Metrics.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "detour_agent_session_reconnects_total 1\n") {
		t.Fatalf("metrics: want one reconnect counted:\n%s", grepLines(string(body), "reconnect"))
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestIdleAgentAsksToBeRemoved: with --max-idle, the agent's health port
// answers /idle; it asks to be removed only after max idle without a
// session, a session (even without an intercept) makes it busy, and the
// clock starts again when the session ends.
func TestIdleAgentAsksToBeRemoved(t *testing.T) {
	const maxIdle = 300 * time.Millisecond
	w := startAgent(t, func(c *agent.Config) { c.MaxIdle = maxIdle })
	idle := func() annotations.IdleReport {
		t.Helper()
		resp, err := http.Get("http://" + w.agent.Addrs().Health.String() + annotations.IdlePath)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r annotations.IdleReport
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %d, %v", annotations.IdlePath, resp.StatusCode, err)
		}
		return r
	}
	if r := idle(); r.Remove || r.MaxIdleSeconds != maxIdle.Seconds() {
		t.Fatalf("just started: %+v", r)
	}
	eventually(t, 5*time.Second, "the agent asks to be removed", func() bool { return idle().Remove })

	s, _ := openClient(t, w, "alice@laptop", tunnel.DefaultConfig())
	if r := idle(); r.Remove || r.IdleSeconds != 0 {
		t.Fatalf("with a session: %+v", r)
	}
	time.Sleep(2 * maxIdle)
	if r := idle(); r.Remove {
		t.Fatalf("a session open for longer than max idle: %+v", r)
	}
	s.Close()
	eventually(t, 5*time.Second, "the session's end is seen", func() bool { r := idle(); return r.IdleSeconds > 0 })
	if r := idle(); r.Remove {
		t.Fatalf("right after the session ended: %+v", r)
	}
	eventually(t, 5*time.Second, "the agent asks again", func() bool { return idle().Remove })
}

// TestGoodbyeIsAnsweredOnTheControlStream: a client that half-closes its
// control stream (client.Session.Close) is saying goodbye. The agent gives
// its intercepts back and then closes its side of the control stream, in
// the session: the client learns it one tunnel round trip later. Closing
// only the session left the client to notice the connection end, which
// the port-forward chain (API server, kubelet, runtime) did not pass on
// within the client's 100 ms wait: every leave took those 100 ms. The
// relay here, like that chain, never tells the client the agent closed.
func TestGoodbyeIsAnsweredOnTheControlStream(t *testing.T) {
	w := startAgent(t, nil)
	relay := stickyRelay(t, w.tunnel)
	conn, err := net.Dial("tcp", relay)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ys, err := tunnel.Client(conn, tunnel.DefaultConfig(), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ys.Close()
	ctrl, _ := ys.OpenStream()
	hello, _ := tunnel.NewFrame(tunnel.FrameHello, 1, tunnel.Hello{Version: tunnel.ProtocolVersion, ClientID: "c", User: "u@h", Secret: client.NewSecret()})
	if err := tunnel.WriteFrame(ctrl, hello); err != nil {
		t.Fatal(err)
	}
	if ack, err := tunnel.ReadFrame(ctrl); err != nil || ack.Type != tunnel.FrameHelloAck {
		t.Fatalf("hello: %v %v", ack.Type, err)
	}
	create, _ := tunnel.NewFrame(tunnel.FrameCreateIntercept, 2, tunnel.CreateIntercept{Name: "hello", Port: w.appPort, Mechanism: tunnel.MechanismTCP})
	if err := tunnel.WriteFrame(ctrl, create); err != nil {
		t.Fatal(err)
	}
	if reply, err := tunnel.ReadFrame(ctrl); err != nil || reply.Type == tunnel.FrameError {
		t.Fatalf("create: %v %v", tunnel.AsError(reply), err)
	}
	ctrl.Close() // goodbye
	_ = ctrl.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := ctrl.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("after the goodbye the control stream read %v, want the agent's EOF", err)
	}
	// By then the intercept is given back.
	if got := whoAnswers(t, w.front); got != "app" {
		t.Fatalf("after the agent's answer to the goodbye %q answered, want the app", got)
	}
}

// stickyRelay passes bytes both ways between its clients and target, but
// like the port-forward chain it does not tell a client that target
// closed: that side stays open until the test ends.
func stickyRelay(t *testing.T, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); up.Close() })
			go io.Copy(up, c)
			go io.Copy(c, up) // and nothing when up ends
		}
	}()
	return ln.Addr().String()
}
