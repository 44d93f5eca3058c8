package netnstest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/tests/internal/nsworld"
	"github.com/detour-dev/detour/tunnel"
)

// Every benchmark here measures a detour path and its baseline in the same
// run, interleaved, and reports the ratio: on a shared 2-core machine the
// absolute figures drift, the ratios much less.

func httpClient(ns string, conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         nsworld.Dialer(ns),
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
	}}
}

func doGet(b *testing.B, c *http.Client, url string) {
	resp, err := c.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// startHAProxyTCP runs haproxy in mode tcp in the pod namespace, relaying
// haproxyHTTP to the app's directHTTP and haproxyBulk to directBulk over
// loopback (not redirected): what the agent's passthrough does, by the
// proxy users compare it with. Its defaults (no splice: haproxy splices
// only with option splice-*) are kept. It returns haproxy's pid, 0 without
// haproxy.
func startHAProxyTCP(b *testing.B, p *pod) int {
	b.Helper()
	conf := fmt.Sprintf(`defaults
	mode tcp
	timeout connect 5s
	timeout client 30s
	timeout server 30s

listen http
	bind %[1]s:%[2]d
	server app 127.0.0.1:%[3]d

listen bulk
	bind %[1]s:%[4]d
	server bulk 127.0.0.1:%[5]d
`, p.w.PodIP, haproxyHTTP, directHTTP, haproxyBulk, directBulk)
	return startHAProxy(b, p, conf, nil, fmt.Sprintf("http://%s:%d/", p.w.PodIP, haproxyHTTP))
}

// passPaths are the ways from the cluster client to the app's handler on
// port direct (directHTTP or directBulk): direct, through the agent (port
// agent, redirected) and through haproxy in mode tcp (port haproxy; nil
// without haproxy); all holds those present. Each has conns keep-alive
// connections for HTTP and the address for raw TCP.
func passPaths(p *pod, haproxyPID, conns, direct, agent, haproxy int) (d, a, h *hbPath, all []*hbPath) {
	mk := func(name string, port, proxy int) *hbPath {
		addr := netip.AddrPortFrom(p.w.PodIP, uint16(port)).String()
		return &hbPath{name: name, client: httpClient(p.w.Client, conns),
			url: "http://" + addr + "/", addr: addr, want: "app\n", proxy: proxy}
	}
	d, a = mk("direct", direct, 0), mk("agent", agent, p.agent.Cmd.Process.Pid)
	all = []*hbPath{d, a}
	if haproxyPID != 0 {
		h = mk("haproxy", haproxy, haproxyPID)
		all = append(all, h)
	}
	return d, a, h, all
}

// BenchmarkPassthroughHTTP: HTTP/1.1 keep-alive requests from the cluster
// client to the app, through the agent (redirected port), direct (a port
// with the same handler that is not redirected) and through haproxy in mode
// tcp (a relay like the agent's), interleaved.
func BenchmarkPassthroughHTTP(b *testing.B) {
	p := startPod(b, podOptions{redirect: true, agentLog: "warn"})
	haproxyPID := startHAProxyTCP(b, p)

	b.Run("latency", func(b *testing.B) {
		// One connection per path, one request at a time: what each relay
		// adds to a request.
		direct, agent, haproxy, all := passPaths(p, haproxyPID, 1, directHTTP, appHTTP, haproxyHTTP)
		lat := hbLatencies(b, all)
		added := func(p *hbPath, q float64) float64 { return us(percentile(lat[p], q) - percentile(lat[direct], q)) }
		b.ReportMetric(us(percentile(lat[direct], 0.5)), "direct-p50-µs")
		b.ReportMetric(us(percentile(lat[agent], 0.5)), "agent-p50-µs")
		b.ReportMetric(added(agent, 0.5), "added-p50-µs")
		b.ReportMetric(added(agent, 0.99), "added-p99-µs")
		if haproxy != nil {
			b.ReportMetric(added(haproxy, 0.5), "haproxy-added-p50-µs")
			b.ReportMetric(added(haproxy, 0.99), "haproxy-added-p99-µs")
		}
	})

	b.Run("throughput", func(b *testing.B) {
		// Eight keep-alive connections per path; rounds of 200 requests per
		// connection, each path in turn; every response checked.
		const workers, round = 8, 200
		direct, agent, haproxy, all := passPaths(p, haproxyPID, workers, directHTTP, appHTTP, haproxyHTTP)
		reqs := hbInterleave(b, all, workers, round)
		rate := func(p *hbPath) float64 { return reqs / p.took.Seconds() }
		b.ReportMetric(rate(direct), "direct-req/s")
		b.ReportMetric(rate(agent), "agent-req/s")
		b.ReportMetric(rate(agent)/rate(direct), "ratio")
		b.ReportMetric(hbCPUPerReq(agent, reqs), "agent-cpu-µs/req")
		if haproxy != nil {
			b.ReportMetric(rate(haproxy), "haproxy-req/s")
			b.ReportMetric(rate(agent)/rate(haproxy), "agent/haproxy")
			b.ReportMetric(hbCPUPerReq(haproxy, reqs), "haproxy-cpu-µs/req")
		}
	})
}

// upload sends size bytes on one connection from the cluster client to addr
// (a bulk sink) and waits for the sink to confirm the count.
func upload(tb testing.TB, ns, addr string, size int64) time.Duration {
	c, err := nsworld.Dial(context.Background(), ns, addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.CopyN(c, zeros{}, size); err != nil {
		tb.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		tb.Fatalf("no confirmation from the sink: %v", err)
	}
	if n, _ := strconv.ParseInt(strings.TrimSpace(line), 10, 64); n != size {
		tb.Fatalf("sink got %d bytes, want %d", n, size)
	}
	return time.Since(start)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// parallelUpload runs streams uploads at once and returns the wall time.
func parallelUpload(tb testing.TB, ns, addr string, streams int, size int64) time.Duration {
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); upload(tb, ns, addr, size) }()
	}
	wg.Wait()
	return time.Since(start)
}

const mib = 1 << 20

func mbps(bytes int64, d time.Duration) float64 { return float64(bytes) / 1e6 / d.Seconds() }

// BenchmarkPassthroughBulk: one large upload at a time through the agent,
// direct and through haproxy in mode tcp, the paths in turn (rotating which
// goes first); the relays' CPU per MB beside their rates.
func BenchmarkPassthroughBulk(b *testing.B) {
	p := startPod(b, podOptions{redirect: true, agentLog: "warn"})
	haproxyPID := startHAProxyTCP(b, p)
	const size = 64 * mib
	direct, agent, haproxy, all := passPaths(p, haproxyPID, 1, directBulk, appBulk, haproxyBulk)
	for _, path := range all {
		upload(b, p.w.Client, path.addr, mib)
	}
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range all {
			path := all[(i+j)%len(all)]
			var cpu0 time.Duration
			if path.proxy != 0 {
				cpu0 = hbMustCPU(b, path.proxy)
			}
			path.took += upload(b, p.w.Client, path.addr, size)
			if path.proxy != 0 {
				path.cpu += hbMustCPU(b, path.proxy) - cpu0
			}
		}
	}
	b.StopTimer()
	total := int64(b.N) * size
	cpuPerMB := func(p *hbPath) float64 { return us(p.cpu) / (float64(total) / 1e6) }
	b.ReportMetric(mbps(total, direct.took), "direct-MB/s")
	b.ReportMetric(mbps(total, agent.took), "agent-MB/s")
	b.ReportMetric(direct.took.Seconds()/agent.took.Seconds(), "ratio")
	b.ReportMetric(cpuPerMB(agent), "agent-cpu-µs/MB")
	if haproxy != nil {
		b.ReportMetric(mbps(total, haproxy.took), "haproxy-MB/s")
		b.ReportMetric(haproxy.took.Seconds()/agent.took.Seconds(), "agent/haproxy")
		b.ReportMetric(cpuPerMB(haproxy), "haproxy-cpu-µs/MB")
	}
}

// BenchmarkInterceptedBulk: uploads from the cluster client that end on the
// workstation, through the agent and a yamux session over a connection
// dialed into the pod's 127.0.0.1 (as a port-forward does), versus a plain
// TCP relay over the same path (a listener in the pod namespace whose
// connections the workstation process relays to the same sink).
func BenchmarkInterceptedBulk(b *testing.B) {
	p := startPod(b, podOptions{redirect: true, agentLog: "warn"})
	sink := serveBulk(b, "", "127.0.0.1:0").Addr().String()
	relay := listen(b, p.w.Pod, fmt.Sprintf(":%d", relayBulk))
	go func() {
		for {
			c, err := relay.Accept()
			if err != nil {
				return
			}
			go func() {
				up, err := net.Dial("tcp", sink)
				if err != nil {
					c.Close()
					return
				}
				tunnel.Join(c, up)
			}()
		}
	}()
	relayAddr := fmt.Sprintf("%s:%d", p.w.PodIP, relayBulk)
	interceptAddr := fmt.Sprintf("%s:%d", p.w.PodIP, appBulk)

	bench := func(b *testing.B, window uint32, streams int, size int64) {
		cfg := tunnel.DefaultConfig()
		cfg.StreamWindow = window
		s := p.session(b, "bench@workstation", cfg)
		if _, err := s.CreateIntercept(context.Background(), client.InterceptSpec{Name: "bulk", Port: appBulk, LocalAddr: sink}); err != nil {
			b.Fatal(err)
		}
		defer func() {
			s.RemoveIntercept(context.Background(), "bulk")
			s.Close()
		}()
		upload(b, p.w.Client, interceptAddr, mib)
		var tunnelTime, relayTime time.Duration
		b.SetBytes(size * int64(streams))
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			relayTime += parallelUpload(b, p.w.Client, relayAddr, streams, size)
			tunnelTime += parallelUpload(b, p.w.Client, interceptAddr, streams, size)
		}
		b.StopTimer()
		total := int64(b.N) * size * int64(streams)
		b.ReportMetric(mbps(total, relayTime), "relay-MB/s")
		b.ReportMetric(mbps(total, tunnelTime), "tunnel-MB/s")
		b.ReportMetric(relayTime.Seconds()/tunnelTime.Seconds(), "ratio")
	}
	for _, window := range []uint32{256 << 10, 1 << 20, 4 << 20, 16 << 20} {
		b.Run(fmt.Sprintf("streams=1/window=%dKiB", window>>10), func(b *testing.B) { bench(b, window, 1, 64*mib) })
	}
	b.Run(fmt.Sprintf("streams=16/window=%dKiB", tunnel.DefaultStreamWindow>>10), func(b *testing.B) {
		bench(b, tunnel.DefaultStreamWindow, 16, 8*mib)
	})
}

// BenchmarkAgentRSS reports the agent's resident memory idle and with 1,000
// open passthrough connections. It measures once whatever b.N is: run it
// with -benchtime 1x (make bench does).
func BenchmarkAgentRSS(b *testing.B) {
	p := startPod(b, podOptions{redirect: true, agentLog: "warn"})
	// Let the agent settle, then read its idle footprint.
	time.Sleep(500 * time.Millisecond)
	idle, err := p.agent.RSS()
	if err != nil {
		b.Fatal(err)
	}
	const n = 1000
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < n; i++ {
		c, err := nsworld.Dial(context.Background(), p.w.Client, fmt.Sprintf("%s:%d", p.w.PodIP, appHTTP))
		if err != nil {
			b.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
		// One request each, so the agent has really dialed the app and is
		// relaying, not just holding an accepted socket.
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: app\r\n\r\n")
	}
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			b.Fatalf("connection %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	loaded, err := p.agent.RSS()
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
	}
	b.ReportMetric(float64(idle)/mib, "idle-MiB")
	b.ReportMetric(float64(loaded)/mib, "1000conns-MiB")
	b.ReportMetric(float64(loaded-idle)/n/1024, "KiB/conn")
}
