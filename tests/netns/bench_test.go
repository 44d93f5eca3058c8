package netnstest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
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

// BenchmarkPassthroughHTTP: HTTP/1.1 keep-alive requests from the cluster
// client to the app, through the agent (redirected port) and direct (a port
// with the same handler that is not redirected).
func BenchmarkPassthroughHTTP(b *testing.B) {
	p := startPod(b, podOptions{redirect: true, agentLog: "warn"})
	agentURL := fmt.Sprintf("http://%s:%d/", p.w.PodIP, appHTTP)
	directURL := fmt.Sprintf("http://%s:%d/", p.w.PodIP, directHTTP)

	b.Run("latency", func(b *testing.B) {
		// One connection, one request at a time: what the agent adds to a request.
		viaAgent, direct := httpClient(p.w.Client, 1), httpClient(p.w.Client, 1)
		doGet(b, viaAgent, agentURL)
		doGet(b, direct, directURL)
		agentLat := make([]time.Duration, 0, b.N)
		directLat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			doGet(b, direct, directURL)
			t1 := time.Now()
			doGet(b, viaAgent, agentURL)
			t2 := time.Now()
			directLat = append(directLat, t1.Sub(t0))
			agentLat = append(agentLat, t2.Sub(t1))
		}
		b.StopTimer()
		b.ReportMetric(us(percentile(directLat, 0.5)), "direct-p50-µs")
		b.ReportMetric(us(percentile(agentLat, 0.5)), "agent-p50-µs")
		b.ReportMetric(us(percentile(agentLat, 0.5)-percentile(directLat, 0.5)), "added-p50-µs")
		b.ReportMetric(us(percentile(agentLat, 0.99)-percentile(directLat, 0.99)), "added-p99-µs")
	})

	b.Run("throughput", func(b *testing.B) {
		// Eight keep-alive connections in parallel, alternating rounds of
		// 200 requests per connection on each path.
		const workers, round = 8, 200
		viaAgent, direct := httpClient(p.w.Client, workers), httpClient(p.w.Client, workers)
		run := func(c *http.Client, url string, n int) time.Duration {
			start := time.Now()
			var wg sync.WaitGroup
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < n; i++ {
						doGet(b, c, url)
					}
				}()
			}
			wg.Wait()
			return time.Since(start)
		}
		run(viaAgent, agentURL, 10)
		run(direct, directURL, 10)
		var agentTime, directTime time.Duration
		b.ResetTimer()
		for done := 0; done < b.N; done += workers * round {
			directTime += run(direct, directURL, round)
			agentTime += run(viaAgent, agentURL, round)
		}
		b.StopTimer()
		reqs := float64(((b.N + workers*round - 1) / (workers * round)) * workers * round)
		b.ReportMetric(reqs/directTime.Seconds(), "direct-req/s")
		b.ReportMetric(reqs/agentTime.Seconds(), "agent-req/s")
		b.ReportMetric(directTime.Seconds()/agentTime.Seconds(), "ratio")
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

// BenchmarkPassthroughBulk: one large upload through the agent versus direct.
func BenchmarkPassthroughBulk(b *testing.B) {
	p := startPod(b, podOptions{redirect: true, agentLog: "warn"})
	const size = 64 * mib
	agentAddr := fmt.Sprintf("%s:%d", p.w.PodIP, appBulk)
	directAddr := fmt.Sprintf("%s:%d", p.w.PodIP, directBulk)
	upload(b, p.w.Client, agentAddr, mib)
	var agentTime, directTime time.Duration
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		directTime += upload(b, p.w.Client, directAddr, size)
		agentTime += upload(b, p.w.Client, agentAddr, size)
	}
	b.StopTimer()
	total := int64(b.N) * size
	b.ReportMetric(mbps(total, directTime), "direct-MB/s")
	b.ReportMetric(mbps(total, agentTime), "agent-MB/s")
	b.ReportMetric(directTime.Seconds()/agentTime.Seconds(), "ratio")
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
