package netnstest

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/tests/internal/nsworld"
	"github.com/detour-dev/detour/tunnel"
)

// The benchmarks of the http mechanism (issue 6): each request through the
// agent's router, beside the same request straight to the app, through a
// passthrough port of the same agent, and through haproxy routing the same
// header in the same pod namespace — all interleaved in one run, ratios
// reported (docs/benchmarks.md, "HTTP routing (issue 6)").

// Ports inside the benchmark's pod namespace (a world of its own: they
// may repeat the numbers of world_test.go).
const (
	hbRoutedPort       = 8080 // redirected; has alice's http intercept: every request goes through the router
	hbPassPort         = 8081 // redirected; no intercept: the agent relays the connection (splice)
	hbH2CPort          = 8082 // redirected; h2c app; has alice's http intercept
	hbDirectPort       = 8090 // the HTTP/1.1 app, not redirected: the baseline
	hbH2CDirectPort    = 8092 // the h2c app, not redirected: the h2c baseline
	hbHAProxyPort      = 8095 // haproxy: x-dev: alice to hbHAProxyOtherPort, the rest to the app
	hbHAProxyOtherPort = 8096 // haproxy's "workstation" backend, on the pod's loopback
	hbHAProxyH2CPort   = 8097 // haproxy for h2c: x-dev: alice to hbHAProxyOtherPort, the rest to the h2c app in HTTP/2
)

// The header alice's intercepts match; requests without it are routed to the app.
const (
	hbMatchHeader = "x-dev"
	hbMatchValue  = "alice"
)

// hbStartPod builds a world whose pod namespace runs the HTTP/1.1 app on
// hbRoutedPort, hbPassPort and hbDirectPort, the h1+h2c app on hbH2CPort and
// hbH2CDirectPort, the redirect rules for the three redirected ports and
// the agent binary with its default tunnel settings.
func hbStartPod(b *testing.B) *pod {
	b.Helper()
	requireWorld(b)
	w, err := nsworld.New()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := w.Close(); err != nil {
			b.Errorf("teardown: %v", err)
		}
	})
	hbServe(b, w.Pod, "app", false, hbRoutedPort, hbPassPort, hbDirectPort)
	hbServe(b, w.Pod, "app", true, hbH2CPort, hbH2CDirectPort)

	redirected := fmt.Sprintf("%d,%d,%d", hbRoutedPort, hbPassPort, hbH2CPort)
	initRedirect(b, w, redirected)
	p := runAgent(b, w, "run",
		"--tunnel-addr", fmt.Sprintf("127.0.0.1:%d", tunnelPort),
		"--health-addr", fmt.Sprintf(":%d", healthPort),
		"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", metricsPort),
		"--redirect-addr", fmt.Sprintf(":%d", agentPort), "--redirect-ports", redirected,
		"--shutdown-grace", "2s", "--log-level", "warn",
		// No TLS whatever this machine has at the pod mount paths.
		"--terminating-tls-dir=", "--originating-tls-dir=")
	return &pod{w: w, agent: p}
}

// hbServe answers every request with name and a newline on each port, in
// namespace ns ("" = host, on 127.0.0.1:0 when no port is given); h2c adds
// HTTP/2 with prior knowledge to HTTP/1.1. It returns the listeners.
func hbServe(tb testing.TB, ns, name string, h2c bool, ports ...int) []net.Listener {
	tb.Helper()
	body := name + "\n"
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, body)
	}), ReadHeaderTimeout: 5 * time.Second, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(h2c)
	var lns []net.Listener
	addrs := make([]string, 0, len(ports))
	for _, port := range ports {
		addrs = append(addrs, fmt.Sprintf(":%d", port))
	}
	if len(addrs) == 0 {
		addrs = []string{"127.0.0.1:0"}
	}
	for _, a := range addrs {
		ln := listen(tb, ns, a)
		lns = append(lns, ln)
		go srv.Serve(ln)
	}
	tb.Cleanup(func() { srv.Close() })
	return lns
}

// hbIntercept gives alice@laptop an http intercept of port for requests
// with x-dev: alice, delivered to local (an address on the workstation, the
// benchmark process).
func hbIntercept(b *testing.B, s *client.Session, name string, port uint16, local string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := s.CreateIntercept(ctx, client.InterceptSpec{
		Name: name, Port: port, Mechanism: tunnel.MechanismHTTP, LocalAddr: local,
		Args: tunnel.HTTPSettings{Match: []tunnel.HeaderMatch{{Name: hbMatchHeader, Value: hbMatchValue}}}.Args(),
	})
	if err != nil {
		b.Fatalf("http intercept of port %d: %v", port, err)
	}
}

// hbStartHAProxy runs haproxy inside the pod namespace, listening on the
// pod IP only, routing x-dev: alice to hbHAProxyOtherPort and every other
// request to the app at 127.0.0.1:hbDirectPort (loopback: not redirected).
// It returns haproxy's pid, or 0 when haproxy is not installed
// (startHAProxy).
func hbStartHAProxy(b *testing.B, p *pod) int {
	b.Helper()
	conf := hbHAProxyConfig(p, hbHAProxyPort, fmt.Sprintf("127.0.0.1:%d", hbDirectPort))
	return startHAProxy(b, p, conf, func() { hbServe(b, p.w.Pod, "haproxy-workstation", false, hbHAProxyOtherPort) },
		fmt.Sprintf("http://%s:%d/", p.w.PodIP, hbHAProxyPort))
}

// hbStartHAProxyH2C runs haproxy as hbStartHAProxy does, for h2c callers:
// a clear-text frontend (haproxy takes the HTTP/2 preface on it) routing
// x-dev: alice to hbHAProxyOtherPort and the rest to the h1+h2c app at
// 127.0.0.1:hbH2CDirectPort in HTTP/2 with prior knowledge, as the
// agent's router, which probed the app as h2c, does. 0 without haproxy.
func hbStartHAProxyH2C(b *testing.B, p *pod) int {
	b.Helper()
	conf := hbHAProxyConfig(p, hbHAProxyH2CPort, fmt.Sprintf("127.0.0.1:%d proto h2", hbH2CDirectPort))
	return startHAProxy(b, p, conf, func() { hbServe(b, p.w.Pod, "haproxy-workstation", false, hbHAProxyOtherPort) },
		fmt.Sprintf("http://%s:%d/", p.w.PodIP, hbHAProxyH2CPort))
}

// hbHAProxyConfig is haproxy's configuration for the benchmarks: listening
// on the pod IP at port, x-dev: alice to hbHAProxyOtherPort, the rest to
// app (a server line's address and options).
func hbHAProxyConfig(p *pod, port int, app string) string {
	return fmt.Sprintf(`defaults
	mode http
	option http-keep-alive
	timeout connect 5s
	timeout client 30s
	timeout server 30s
	timeout http-keep-alive 30s

frontend web
	bind %s:%d
	acl dev hdr(%s) -m str %s
	use_backend workstation if dev
	default_backend app

backend app
	server app %s

backend workstation
	server workstation 127.0.0.1:%d
`, p.w.PodIP, port, hbMatchHeader, hbMatchValue, app, hbHAProxyOtherPort)
}

// startHAProxy runs haproxy with proxies (its defaults, frontends and
// backends; the global section is set here) inside the pod namespace,
// after setup (the backends haproxy needs, nil for none), and waits until
// readyURL answers "app\n" from the client namespace. haproxy is killed when
// the benchmark ends, and by the kernel (Pdeathsig) should the benchmark
// process die first. It returns haproxy's pid (nsenter execs it in place;
// -db keeps it in the foreground: one process, no master), or 0 when
// haproxy is not installed: the haproxy column is then left out.
func startHAProxy(b *testing.B, p *pod, proxies string, setup func(), readyURL string) int {
	b.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		b.Logf("no haproxy column: %v (make deps installs it)", err)
		return 0
	}
	cfg := filepath.Join(b.TempDir(), "haproxy.cfg")
	conf := "global\n\tmaxconn 4096\n\n" + proxies
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-q", "-f", cfg).CombinedOutput(); err != nil {
		b.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	if setup != nil {
		setup()
	}

	cmd := nsworld.Command(context.Background(), p.w.Pod, bin, "-f", cfg, "-db")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out hbLockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		b.Fatalf("start haproxy: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	b.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if b.Failed() {
			b.Logf("haproxy output:\n%s", out.String())
		}
	})
	// Ready once it answers from the client namespace.
	c := httpClient(p.w.Client, 1)
	for deadline := time.Now().Add(10 * time.Second); ; {
		select {
		case <-done:
			b.Fatalf("haproxy exited: %s", out.String())
		default:
		}
		err := hbGet(c, readyURL, "", "app\n")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("haproxy not answering within 10s: %v\n%s", err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.CloseIdleConnections()
	return cmd.Process.Pid
}

type hbLockedBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *hbLockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *hbLockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

// hbGet sends one GET (with x-dev: devValue unless it is empty) and checks
// the answer is 200 with body want: a fast 502 must never count as a request
// served.
func hbGet(c *http.Client, url, devValue, want string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if devValue != "" {
		req.Header.Set(hbMatchHeader, devValue)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	var buf [64]byte
	n, _ := io.ReadFull(resp.Body, buf[:])
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(buf[:n]) != want {
		return fmt.Errorf("GET %s (x-dev %q): status %d, body %q, want 200 %q", url, devValue, resp.StatusCode, buf[:n], want)
	}
	return nil
}

// hbCloseIdle closes the paths' connections once a benchmark run is done
// with them (each b.N run makes its own clients).
func hbCloseIdle(paths ...*hbPath) {
	for _, p := range paths {
		p.client.CloseIdleConnections()
	}
}

// hbPath is one way to the same handler, measured in rounds.
type hbPath struct {
	name     string // metric prefix
	client   *http.Client
	url      string
	addr     string // host:port, for the paths that carry raw TCP (bulk)
	devValue string // x-dev header value, "" for none
	want     string // expected body
	proxy    int    // pid of the proxy on the path (agent, haproxy), 0 for none
	took     time.Duration
	cpu      time.Duration // the proxy's CPU time (user+system) during this path's rounds
}

// hbCPU returns the CPU time process pid has used so far, from
// /proc/PID/stat (clock ticks, USER_HZ = 100 on Linux: 10 ms resolution,
// fine over the seconds a benchmark accumulates).
func hbCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: utime and stime are the 12th and 13th of them.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// hbCPUPerReq is a proxy's CPU time per request in µs.
func hbCPUPerReq(p *hbPath, reqs float64) float64 { return us(p.cpu) / reqs }

// hbRound sends n requests on each of workers goroutines sharing c (one
// keep-alive connection each) and returns the wall time.
func hbRound(c *http.Client, url, devValue, want string, workers, n int) (time.Duration, error) {
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n; i++ {
				if err := hbGet(c, url, devValue, want); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return 0, *e
	}
	return time.Since(start), nil
}

// hbInterleave runs rounds of up to workers×round requests on every path
// until b.N requests per path are done, rotating which path goes first so
// none is always measured on a warmer (or busier) machine, and returns the
// requests sent per path. b.N counts requests per path: ns/op is the time
// one request takes on all the paths together.
func hbInterleave(b *testing.B, paths []*hbPath, workers, round int) float64 {
	b.Helper()
	defer hbCloseIdle(paths...)
	for _, p := range paths { // connections up, the router's backends probed
		if _, err := hbRound(p.client, p.url, p.devValue, p.want, workers, 20); err != nil {
			b.Fatalf("%s warm-up: %v", p.name, err)
		}
	}
	b.ResetTimer()
	rounds, done := 0, 0
	for done < b.N {
		n := min(round, (b.N-done+workers-1)/workers)
		for i := range paths {
			p := paths[(i+rounds)%len(paths)]
			var cpu0 time.Duration
			if p.proxy != 0 {
				cpu0 = hbMustCPU(b, p.proxy)
			}
			d, err := hbRound(p.client, p.url, p.devValue, p.want, workers, n)
			if err != nil {
				b.Fatalf("%s: %v", p.name, err)
			}
			p.took += d
			if p.proxy != 0 {
				p.cpu += hbMustCPU(b, p.proxy) - cpu0
			}
		}
		rounds++
		done += workers * n
	}
	b.StopTimer()
	return float64(done)
}

// hbLatencies sends b.N requests on each path, one connection per path and
// one request at a time, the paths in turn (rotating which goes first),
// and returns each request's time by path.
func hbLatencies(b *testing.B, all []*hbPath) map[*hbPath][]time.Duration {
	b.Helper()
	defer hbCloseIdle(all...)
	lat := make(map[*hbPath][]time.Duration, len(all))
	for _, p := range all {
		for i := 0; i < 20; i++ {
			if err := hbGet(p.client, p.url, p.devValue, p.want); err != nil {
				b.Fatalf("%s warm-up: %v", p.name, err)
			}
		}
		lat[p] = make([]time.Duration, 0, b.N)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range all {
			p := all[(i+j)%len(all)]
			t0 := time.Now()
			if err := hbGet(p.client, p.url, p.devValue, p.want); err != nil {
				b.Fatalf("%s: %v", p.name, err)
			}
			lat[p] = append(lat[p], time.Since(t0))
		}
	}
	b.StopTimer()
	return lat
}

func hbMustCPU(b *testing.B, pid int) time.Duration {
	d, err := hbCPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// BenchmarkHTTPRouting: HTTP/1.1 keep-alive requests from the cluster
// client to a port with an http intercept (alice's, on x-dev: alice), so
// each request is parsed by the agent's router and proxied, against the
// same requests straight to the app, through a passthrough port of the same
// agent, and through haproxy routing the same header in the pod namespace.
func BenchmarkHTTPRouting(b *testing.B) {
	p := hbStartPod(b)
	haproxyPID := hbStartHAProxy(b, p)
	agentPID := p.agent.Cmd.Process.Pid
	local := hbServe(b, "", "alice", false)[0].Addr().String()
	s := p.session(b, "alice@laptop", tunnel.DefaultConfig())
	hbIntercept(b, s, "web", hbRoutedPort, local)

	url := func(port int) string { return fmt.Sprintf("http://%s:%d/", p.w.PodIP, port) }
	// paths returns the ways to the app, haproxy nil without haproxy, and
	// all of them.
	paths := func(conns int) (direct, pass, haproxy, router *hbPath, all []*hbPath) {
		mk := func(name string, port, proxy int) *hbPath {
			return &hbPath{name: name, client: httpClient(p.w.Client, conns), url: url(port), want: "app\n", proxy: proxy}
		}
		direct, pass, router = mk("direct", hbDirectPort, 0), mk("pass", hbPassPort, agentPID), mk("router", hbRoutedPort, agentPID)
		all = []*hbPath{direct, pass, router}
		if haproxyPID != 0 {
			haproxy = mk("haproxy", hbHAProxyPort, haproxyPID)
			all = append(all, haproxy)
		}
		return direct, pass, haproxy, router, all
	}
	// The routing is real: alice's header goes to her workstation.
	probe := httpClient(p.w.Client, 1)
	if err := hbGet(probe, url(hbRoutedPort), hbMatchValue, "alice\n"); err != nil {
		b.Fatal(err)
	}
	if haproxyPID != 0 {
		if err := hbGet(probe, url(hbHAProxyPort), hbMatchValue, "haproxy-workstation\n"); err != nil {
			b.Fatal(err)
		}
	}
	probe.CloseIdleConnections()

	b.Run("throughput", func(b *testing.B) {
		// Eight keep-alive connections per path; rounds of 200 requests per
		// connection, each path in turn.
		const workers, round = 8, 200
		direct, pass, haproxy, router, all := paths(workers)
		reqs := hbInterleave(b, all, workers, round)
		rate := func(p *hbPath) float64 { return reqs / p.took.Seconds() }
		b.ReportMetric(rate(direct), "direct-req/s")
		b.ReportMetric(rate(pass), "pass-req/s")
		b.ReportMetric(rate(router), "router-req/s")
		b.ReportMetric(rate(router)/rate(direct), "router/direct")
		b.ReportMetric(rate(pass)/rate(direct), "pass/direct")
		// What each proxy spends per request: the cost behind the ratios,
		// less sensitive to the machine's other load than req/s.
		b.ReportMetric(hbCPUPerReq(router, reqs), "router-cpu-µs/req")
		b.ReportMetric(hbCPUPerReq(pass, reqs), "pass-cpu-µs/req")
		if haproxy != nil {
			b.ReportMetric(rate(haproxy), "haproxy-req/s")
			b.ReportMetric(rate(router)/rate(haproxy), "router/haproxy")
			b.ReportMetric(hbCPUPerReq(haproxy, reqs), "haproxy-cpu-µs/req")
		}
	})

	b.Run("latency", func(b *testing.B) {
		// One connection per path, one request at a time, the paths in turn.
		direct, pass, haproxy, router, all := paths(1)
		lat := hbLatencies(b, all)
		added := func(p *hbPath, q float64) float64 { return us(percentile(lat[p], q) - percentile(lat[direct], q)) }
		b.ReportMetric(us(percentile(lat[direct], 0.5)), "direct-p50-µs")
		b.ReportMetric(us(percentile(lat[direct], 0.99)), "direct-p99-µs")
		b.ReportMetric(added(router, 0.5), "router-added-p50-µs")
		b.ReportMetric(added(router, 0.99), "router-added-p99-µs")
		b.ReportMetric(added(pass, 0.5), "pass-added-p50-µs")
		if haproxy != nil {
			b.ReportMetric(added(haproxy, 0.5), "haproxy-added-p50-µs")
			b.ReportMetric(added(haproxy, 0.99), "haproxy-added-p99-µs")
		}
	})

	b.Run("to-intercept", func(b *testing.B) {
		// Requests carrying alice's header: through the router and the
		// tunnel to her local server (in the benchmark process), against the
		// app direct. Information: a developer's process, not a target.
		const workers, round = 8, 200
		direct := &hbPath{name: "direct", client: httpClient(p.w.Client, workers), url: url(hbDirectPort), want: "app\n"}
		intercept := &hbPath{name: "intercept", client: httpClient(p.w.Client, workers), url: url(hbRoutedPort), devValue: hbMatchValue, want: "alice\n", proxy: agentPID}
		reqs := hbInterleave(b, []*hbPath{direct, intercept}, workers, round)
		b.ReportMetric(reqs/direct.took.Seconds(), "direct-req/s")
		b.ReportMetric(reqs/intercept.took.Seconds(), "intercept-req/s")
		b.ReportMetric(direct.took.Seconds()/intercept.took.Seconds(), "intercept/direct")
		b.ReportMetric(hbCPUPerReq(intercept, reqs), "agent-cpu-µs/req")
	})
}

// hbH2C is an h2c client that keeps to one connection: StrictMaxConcurrentStreams
// queues requests beyond the server's stream limit instead of dialing more.
// dials counts the connections it opened.
func hbH2C(ns string, dials *atomic.Int32) *http.Client {
	return &http.Client{Transport: &http2.Transport{
		AllowHTTP:                  true,
		StrictMaxConcurrentStreams: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			dials.Add(1)
			return nsworld.Dial(ctx, ns, addr)
		},
	}}
}

// BenchmarkH2CRouting: 100 concurrent streams on one h2c connection from
// the cluster client, through the agent's router (a port with alice's http
// intercept; the agent probed the app as h2c and speaks h2c to it) against
// the same streams on one connection straight to the app, and through
// haproxy routing the same header to the same app in h2c.
func BenchmarkH2CRouting(b *testing.B) {
	p := hbStartPod(b)
	haproxyPID := hbStartHAProxyH2C(b, p)
	local := hbServe(b, "", "alice", true)[0].Addr().String()
	s := p.session(b, "alice@laptop", tunnel.DefaultConfig())
	hbIntercept(b, s, "grpc", hbH2CPort, local)

	url := func(port int) string { return fmt.Sprintf("http://%s:%d/", p.w.PodIP, port) }
	probe := hbH2C(p.w.Client, new(atomic.Int32))
	if err := hbGet(probe, url(hbH2CPort), hbMatchValue, "alice\n"); err != nil {
		b.Fatal(err)
	}
	if haproxyPID != 0 {
		if err := hbGet(probe, url(hbHAProxyH2CPort), hbMatchValue, "haproxy-workstation\n"); err != nil {
			b.Fatal(err)
		}
	}
	probe.CloseIdleConnections()

	// A sub-benchmark, so the pod above is set up once, not once per b.N.
	b.Run("streams=100", func(b *testing.B) {
		const streams, round = 100, 20
		var directDials, routerDials, haproxyDials atomic.Int32
		direct := &hbPath{name: "direct", client: hbH2C(p.w.Client, &directDials), url: url(hbH2CDirectPort), want: "app\n"}
		router := &hbPath{name: "router", client: hbH2C(p.w.Client, &routerDials), url: url(hbH2CPort), want: "app\n", proxy: p.agent.Cmd.Process.Pid}
		all := []*hbPath{direct, router}
		var haproxy *hbPath
		if haproxyPID != 0 {
			haproxy = &hbPath{name: "haproxy", client: hbH2C(p.w.Client, &haproxyDials), url: url(hbHAProxyH2CPort), want: "app\n", proxy: haproxyPID}
			all = append(all, haproxy)
		}
		reqs := hbInterleave(b, all, streams, round)
		if d, r := directDials.Load(), routerDials.Load(); d != 1 || r != 1 || haproxy != nil && haproxyDials.Load() != 1 {
			b.Fatalf("the h2c clients opened %d (direct), %d (router) and %d (haproxy) connections, want one each", d, r, haproxyDials.Load())
		}
		b.ReportMetric(reqs/direct.took.Seconds(), "direct-req/s")
		b.ReportMetric(reqs/router.took.Seconds(), "router-req/s")
		b.ReportMetric(direct.took.Seconds()/router.took.Seconds(), "router/direct")
		b.ReportMetric(hbCPUPerReq(router, reqs), "router-cpu-µs/req")
		if haproxy != nil {
			b.ReportMetric(reqs/haproxy.took.Seconds(), "haproxy-req/s")
			b.ReportMetric(haproxy.took.Seconds()/router.took.Seconds(), "router/haproxy")
			b.ReportMetric(hbCPUPerReq(haproxy, reqs), "haproxy-cpu-µs/req")
		}
	})
}
