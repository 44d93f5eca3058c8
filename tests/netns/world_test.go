package netnstest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/client/cli"
	"github.com/detour-dev/detour/tests/internal/nsworld"
	"github.com/detour-dev/detour/tunnel"
	"go.uber.org/zap"
)

// Ports inside the pod namespace.
const (
	appHTTP     = 8080 // redirected to the agent
	appBulk     = 8081 // redirected: a sink/source for bulk transfers
	directHTTP  = 8090 // same app handler, not redirected: the baseline
	directBulk  = 8091
	relayBulk   = 8092 // baseline for intercepted bulk: a plain TCP relay to the workstation
	haproxyHTTP = 8095 // haproxy in mode tcp to directHTTP: the passthrough's peer (benchmarks)
	haproxyBulk = 8096 // haproxy in mode tcp to directBulk
	agentPort   = 15001
	tunnelPort  = 9900
	healthPort  = 9901
	metricsPort = 9902
)

var agentBinary string

func TestMain(m *testing.M) {
	switch {
	case cli.NamespaceChild(): // the first process of a cluster-network namespace
		os.Exit(cli.NamespaceChildMain())
	case os.Getenv(clusterRunEnv) != "":
		os.Exit(clusterRunMain())
	case os.Getenv(probeEnv) != "":
		os.Exit(probeMain())
	}
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperClientMain())
	}
	if err := nsworld.Available(); err != nil {
		fmt.Printf("SKIP netns tests: %v\n", err)
		os.Exit(m.Run()) // each test skips itself with the reason
	}
	dir, err := os.MkdirTemp("", "detour-netns-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	agentBinary = filepath.Join(dir, "detour-agent")
	build := exec.Command("go", "build", "-o", agentBinary, "github.com/detour-dev/detour/cmd/detour-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build detour-agent: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func requireWorld(tb testing.TB) {
	tb.Helper()
	if err := nsworld.Available(); err != nil {
		tb.Skip(err)
	}
}

type pod struct {
	w     *nsworld.World
	agent *nsworld.Process
}

type podOptions struct {
	redirect bool     // init rules + redirect listener; else port-rename listeners
	agentLog string   // --log-level
	extra    []string // more agent flags
}

// startPod builds a world, starts the app servers in the pod namespace,
// applies the init rules (redirect mode) and starts the agent binary.
func startPod(tb testing.TB, opts podOptions) *pod {
	tb.Helper()
	requireWorld(tb)
	w, err := nsworld.New()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := w.Close(); err != nil {
			tb.Errorf("teardown: %v", err)
		}
	})
	serveHTTP(tb, w.Pod, fmt.Sprintf(":%d", appHTTP), "app")
	serveHTTP(tb, w.Pod, fmt.Sprintf(":%d", directHTTP), "app")
	serveBulk(tb, w.Pod, fmt.Sprintf(":%d", appBulk))
	serveBulk(tb, w.Pod, fmt.Sprintf(":%d", directBulk))

	args := []string{"run",
		"--tunnel-addr", fmt.Sprintf("127.0.0.1:%d", tunnelPort),
		"--health-addr", fmt.Sprintf(":%d", healthPort),
		"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", metricsPort),
		"--keepalive", "500ms", "--write-timeout", "500ms",
		"--shutdown-grace", "2s",
		"--log-level", cmp(opts.agentLog, "info"),
	}
	if opts.redirect {
		initRedirect(tb, w, fmt.Sprintf("%d,%d", appHTTP, appBulk))
		args = append(args, "--redirect-addr", fmt.Sprintf(":%d", agentPort), "--redirect-ports", fmt.Sprintf("%d,%d", appHTTP, appBulk))
	} else {
		// Port-rename mode: the Service would now target the agent's port.
		args = append(args, "--listen", fmt.Sprintf("%d:%d,%d:%d", 18080, appHTTP, 18081, appBulk))
	}
	args = append(args, opts.extra...)
	return &pod{w: w, agent: runAgent(tb, w, args...)}
}

// initRedirect runs `detour-agent init` in the pod: ports (comma-separated)
// are redirected to the agent's redirect port.
func initRedirect(tb testing.TB, w *nsworld.World, ports string) {
	tb.Helper()
	if out, err := nsworld.Command(context.Background(), w.Pod, agentBinary, "init",
		"--ports", ports, "--agent-port", fmt.Sprint(agentPort)).CombinedOutput(); err != nil {
		tb.Fatalf("detour-agent init: %v\n%s", err, out)
	}
}

// runAgent starts `detour-agent` with args in the pod, stops it at the end
// of the test (showing its output if the test failed), and waits until it
// is ready.
func runAgent(tb testing.TB, w *nsworld.World, args ...string) *nsworld.Process {
	tb.Helper()
	p, err := nsworld.Start(w.Pod, nil, agentBinary, args...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := p.Stop(5 * time.Second); err != nil && !p.Killed() {
			tb.Errorf("agent exit: %v\n%s", err, p.Output())
		}
		if tb.Failed() {
			tb.Logf("agent output:\n%s", p.Output())
		}
	})
	if err := p.WaitHTTP(w.Pod, fmt.Sprintf("http://127.0.0.1:%d/readyz", healthPort), 10*time.Second); err != nil {
		tb.Fatal(err)
	}
	return p
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// serveHTTP answers every request with name, in namespace ns ("" = host).
func serveHTTP(tb testing.TB, ns, addr, name string) net.Listener {
	tb.Helper()
	ln := listen(tb, ns, addr)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		fmt.Fprintln(w, name)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	tb.Cleanup(func() { srv.Close() })
	return ln
}

// serveBulk: a connection that starts with 'D' gets downloads until it
// closes; otherwise everything read is discarded and the byte count sent
// back once the writer half-closes.
func serveBulk(tb testing.TB, ns, addr string) net.Listener {
	tb.Helper()
	ln := listen(tb, ns, addr)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				n, _ := io.Copy(io.Discard, c)
				fmt.Fprintf(c, "%d\n", n)
			}()
		}
	}()
	return ln
}

func listen(tb testing.TB, ns, addr string) net.Listener {
	tb.Helper()
	var ln net.Listener
	var err error
	if ns == "" {
		ln, err = net.Listen("tcp", addr)
	} else {
		ln, err = nsworld.Listen(ns, addr)
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	return ln
}

// get sends one request from the cluster-client namespace on a new
// connection and returns the body (which names who answered) or the error.
func (p *pod) get(port int) string {
	c := &http.Client{Transport: &http.Transport{DialContext: nsworld.Dialer(p.w.Client), DisableKeepAlives: true}, Timeout: 3 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://%s:%d/", p.w.PodIP, port))
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

// portForward connects to the agent's tunnel port the way the kubelet's
// port-forward does: from inside the pod's namespace, to 127.0.0.1.
func (p *pod) portForward(tb testing.TB) net.Conn {
	tb.Helper()
	c, err := nsworld.Dial(context.Background(), p.w.Pod, fmt.Sprintf("127.0.0.1:%d", tunnelPort))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func (p *pod) session(tb testing.TB, user string, cfg tunnel.Config) *client.Session {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := client.Open(ctx, p.portForward(tb), client.Options{ClientID: user, User: user, Tunnel: cfg, Log: testLogger(tb)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func testLogger(tb testing.TB) *zap.Logger {
	if _, ok := tb.(*testing.B); ok {
		return zap.NewNop()
	}
	l, _ := zap.NewDevelopment()
	return l.WithOptions(zap.IncreaseLevel(zap.WarnLevel))
}

func eventually(tb testing.TB, within time.Duration, what string, cond func() bool) time.Duration {
	tb.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			tb.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// The helper client: the test binary re-executed as a separate process that
// holds an intercept, so a test can kill -9 it like a crashed laptop client.
const helperEnv = "DETOUR_NETNS_HELPER_CLIENT"

func helperClientMain() int {
	// DETOUR_NETNS_HELPER_CLIENT=<pod netns>,<app port>,<local addr>
	parts := strings.Split(os.Getenv(helperEnv), ",")
	if len(parts) != 3 {
		fmt.Fprintln(os.Stderr, "helper: bad", helperEnv)
		return 2
	}
	var port uint16
	fmt.Sscan(parts[1], &port)
	ctx := context.Background()
	conn, err := nsworld.Dial(ctx, parts[0], fmt.Sprintf("127.0.0.1:%d", tunnelPort))
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	s, err := client.Open(ctx, conn, client.Options{ClientID: "helper", User: "crashy@laptop"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	if _, err := s.CreateIntercept(ctx, client.InterceptSpec{Name: "crashy", Port: port, LocalAddr: parts[2]}); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	fmt.Println("READY")
	<-s.Done()
	return 0
}

func startHelperClient(tb testing.TB, p *pod, port int, local string) *exec.Cmd {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d,%s", helperEnv, p.w.Pod, port, local))
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "READY" {
		tb.Fatalf("helper client did not get ready: %q %v", line, err)
	}
	return cmd
}
