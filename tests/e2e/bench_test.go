//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/detour-dev/detour/tests/internal/images"
)

// tcpEchoServer echoes every connection on 127.0.0.1 until the peer
// half-closes: the workstation's stand-in for the app's TCP echo port.
func tcpEchoServer(tb testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
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
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().(*net.TCPAddr).Port
}

// echoBulk sends size bytes on a new connection and reads them back.
func echoBulk(tb testing.TB, addr string, size int64) time.Duration {
	return echoVia(tb, hostDial, addr, size)
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// connectRTT opens n new connections one after another, each sending one
// byte and waiting for it to come back, and returns the durations.
func connectRTT(tb testing.TB, addr string, n int) []time.Duration {
	return tracedConnectRTT(tb, addr, n, 0, false)
}

// livePod is a pod of ns matching selector that is not being deleted.
func livePod(ctx context.Context, tb testing.TB, cs kubernetes.Interface, ns, selector string) corev1.Pod {
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil || len(pods.Items) == 0 {
		tb.Fatalf("pods: %v", err)
	}
	pod := pods.Items[0]
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			pod = p
		}
	}
	return pod
}

// streamRTT sends n 1-byte echoes one after another on one connection: the
// round trip of an established stream, without a connection's set-up.
func streamRTT(tb testing.TB, addr string, n int) []time.Duration {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	b := make([]byte, 1)
	out := make([]time.Duration, 0, n)
	for i := 0; i < n+10; i++ { // the first 10 warm the path up
		start := time.Now()
		if _, err := c.Write([]byte{'x'}); err != nil {
			tb.Fatal(err)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			tb.Fatalf("1-byte echo on an open stream via %s: %v", addr, err)
		}
		if i >= 10 {
			out = append(out, time.Since(start))
		}
	}
	return out
}

func pct(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// setupAndLeave times one intercept by u until the workstation serves the
// first request (the command and the first request, as a user sees it),
// then its leave until the app answers again.
func setupAndLeave(b *testing.B, u *user, ns string, localHTTP int, httpURL string) (toFirst, toApp time.Duration) {
	b.Helper()
	start := time.Now()
	u.must("intercept", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", localHTTP))
	eventuallyEvery(b, 10*time.Second, 2*time.Millisecond, "first request at the workstation", func() bool { return who(httpURL) == "workstation" })
	toFirst = time.Since(start)
	start = time.Now()
	u.must("leave", "web-"+ns)
	eventuallyEvery(b, 10*time.Second, 2*time.Millisecond, "app answers after leave", func() bool { return strings.HasPrefix(who(httpURL), "hello from") })
	return toFirst, time.Since(start)
}

// benchRounds is DETOUR_BENCH_ROUNDS, or def when it is unset.
func benchRounds(def int) int {
	if n, err := strconv.Atoi(os.Getenv("DETOUR_BENCH_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return def
}

// setupRounds times 8 rounds (DETOUR_BENCH_ROUNDS) of setupAndLeave by each of users, every
// other round in reverse order: each user's intercept → first request,
// and the first user's leave → app.
func setupRounds(b *testing.B, users []*user, ns string, localHTTP int, httpURL string) (toFirst [][]time.Duration, toApp []time.Duration) {
	b.Helper()
	rounds := benchRounds(8)
	toFirst = make([][]time.Duration, len(users))
	for i := 0; i < rounds; i++ {
		for j := range users {
			if i%2 == 1 {
				j = len(users) - 1 - j
			}
			first, back := setupAndLeave(b, users[j], ns, localHTTP, httpURL)
			toFirst[j] = append(toFirst[j], first)
			if j == 0 {
				toApp = append(toApp, back)
			}
		}
	}
	return toFirst, toApp
}

// BenchmarkClusterIntercept measures an intercept on the local cluster,
// each figure beside a raw client-go port-forward (what kubectl
// port-forward does) to the same pod, in the same run. It measures once,
// whatever b.N is: run it with -benchtime 1x (make bench does).
func BenchmarkClusterIntercept(b *testing.B) {
	ctx := context.Background()
	cfg := restConfig(b)
	cs := clientset(b, cfg)
	u := newUser(b)
	u.must("install", "--image", images.Detour)
	ns := createNamespace(ctx, b, cs, "bench")
	svc := deployWeb(ctx, b, cs, ns, "web", 1)
	httpURL := fmt.Sprintf("http://%s:80/", svc.Spec.ClusterIP)
	echoAddr := net.JoinHostPort(svc.Spec.ClusterIP, fmt.Sprint(echoTCPPort))
	localHTTP := localServer(b, "workstation")
	localEcho := tcpEchoServer(b)

	// Inject the agent first, so the timings below are of the intercept alone.
	u.must("intercept", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", localHTTP))
	u.must("leave", "web-"+ns)
	eventually(b, 10*time.Second, "app answers", func() bool { return strings.HasPrefix(who(httpURL), "hello from") })

	// Set-up with the agent present (intercept → first request served by
	// the workstation) and leave → the app, in rounds; with another build
	// (DETOUR_BENCH_OTHER_DETOUR) its set-up in the same rounds, each
	// round in the other order.
	other := os.Getenv("DETOUR_BENCH_OTHER_DETOUR")
	setups := []*user{u}
	if other != "" {
		o := newUser(b)
		o.bin = other
		setups = append(setups, o)
		setupAndLeave(b, o, ns, localHTTP, httpURL) // its daemon starts: not measured
	}
	toFirst, toApp := setupRounds(b, setups, ns, localHTTP, httpURL)

	pod := livePod(ctx, b, cs, ns, "app=web")
	fwd := portForward(ctx, b, cfg, cs, &pod, echoTCPPort, echoHTTPPort)
	raw := net.JoinHostPort("127.0.0.1", fmt.Sprint(fwd[0]))

	// Small requests: 8 keep-alive connections through the intercept (the
	// Service, the agent, the port-forward, the daemon, the workstation's
	// server), against the same requests over a raw port-forward to the
	// pod's own server; the intercept once with the daemon's port-forwards
	// over SPDY (the default) and once over WebSocket (kubectl's order).
	viaWS := newUser(b)
	viaWS.env = []string{"DETOUR_PORT_FORWARD=websocket"}
	rawHTTP := fmt.Sprintf("http://127.0.0.1:%d/", fwd[1])
	var reqRaw, reqSPDY, reqWS, reqOther, reqOtherAgent float64
	reqRounds := benchRounds(3)
	type variant struct {
		u             *user
		sum           *float64
		workload, url string
	}
	variants := []variant{{u, &reqSPDY, "web", httpURL}, {viaWS, &reqWS, "web", httpURL}}
	// DETOUR_BENCH_OTHER_DETOUR: another build of cmd/detour (an earlier
	// tree's) in the same rounds, a before/after interleaved; every other
	// round runs the variants in reverse order.
	if other != "" {
		variants = append(variants, variant{setups[1], &reqOther, "web", httpURL})
	}
	// DETOUR_BENCH_OTHER_AGENT: a directory with another build's binaries
	// (make build's bin/): that build's agent on a second Deployment, with
	// this tree's daemon, in the same rounds.
	if dir := os.Getenv("DETOUR_BENCH_OTHER_AGENT"); dir != "" {
		osvc := deployOtherAgent(ctx, b, cs, ns, dir)
		ourl := fmt.Sprintf("http://%s:80/", osvc.Spec.ClusterIP)
		u.must("intercept", "web-other", "-n", ns, "--port", fmt.Sprintf("%d:http", localHTTP)) // injects it
		u.must("leave", "web-other-"+ns)
		eventually(b, time.Minute, "the other agent's app answers", func() bool { return strings.HasPrefix(who(ourl), "hello from") })
		variants = append(variants, variant{u, &reqOtherAgent, "web-other", ourl})
	}
	for i := 0; i < reqRounds; i++ {
		reqRaw += keepAliveRate(b, rawHTTP, 8, 3*time.Second)
		order := slices.Clone(variants)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		for _, x := range order {
			x.u.must("intercept", x.workload, "-n", ns, "--port", fmt.Sprintf("%d:http", localHTTP))
			eventually(b, 10*time.Second, "requests at the workstation", func() bool { return who(x.url) == "workstation" })
			*x.sum += keepAliveRate(b, x.url, 8, 3*time.Second)
			x.u.must("leave", x.workload+"-"+ns)
			eventually(b, 10*time.Second, "app answers after leave", func() bool { return strings.HasPrefix(who(x.url), "hello from") })
		}
	}

	// Bulk and per-connection cost: intercept the TCP echo port to the local
	// echo server, against a raw port-forward to the pod's own echo port.
	u.must("intercept", "web", "-n", ns, "--port", fmt.Sprintf("%d:tcp-echo", localEcho))
	eventually(b, 10*time.Second, "echo intercepted", func() bool { _, err := net.DialTimeout("tcp", echoAddr, time.Second); return err == nil })

	const size = 64 << 20
	echoBulk(b, echoAddr, 1<<20)
	echoBulk(b, raw, 1<<20)
	var viaDetour, viaRaw time.Duration
	for i := 0; i < 3; i++ {
		viaRaw += echoBulk(b, raw, size)
		viaDetour += echoBulk(b, echoAddr, size)
	}
	detourRTT := connectRTT(b, echoAddr, 200)
	rawRTT := connectRTT(b, raw, 200)
	// The floor of this design (issue 14 §3): one round trip over a
	// port-forward stream that is already open.
	openRTT := streamRTT(b, raw, 200)
	for i := 0; i < b.N; i++ {
	}
	mb := float64(3*2*size) / 1e6 // each echo carries size bytes each way
	b.ReportMetric(reqSPDY/float64(reqRounds), "intercept-keepalive-req/s")
	b.ReportMetric(reqWS/float64(reqRounds), "intercept-keepalive-websocket-req/s")
	b.ReportMetric(reqRaw/float64(reqRounds), "raw-portforward-keepalive-req/s")
	b.ReportMetric(reqSPDY/reqRaw, "keepalive-ratio")
	b.ReportMetric(reqSPDY/reqWS, "spdy/websocket-intercept-req-ratio")
	if reqOtherAgent > 0 {
		b.ReportMetric(reqOtherAgent/float64(reqRounds), "other-agent-keepalive-req/s")
		b.ReportMetric(reqSPDY/reqOtherAgent, "vs-other-agent-keepalive")
	}
	if other != "" {
		b.ReportMetric(reqOther/float64(reqRounds), "other-keepalive-req/s")
		b.ReportMetric(reqSPDY/reqOther, "vs-other-keepalive")
	}
	b.ReportMetric(ms(pct(toFirst[0], 0.5)), "intercept-to-first-request-p50-ms")
	if other != "" {
		b.ReportMetric(ms(pct(toFirst[1], 0.5)), "other-intercept-to-first-request-p50-ms")
		b.ReportMetric(float64(pct(toFirst[0], 0.5))/float64(pct(toFirst[1], 0.5)), "vs-other-setup-p50")
	}
	b.ReportMetric(ms(pct(toApp, 0.5)), "leave-to-app-p50-ms")
	b.ReportMetric(mb/viaDetour.Seconds(), "intercept-echo-MB/s")
	b.ReportMetric(mb/viaRaw.Seconds(), "raw-portforward-echo-MB/s")
	b.ReportMetric(viaRaw.Seconds()/viaDetour.Seconds(), "bulk-ratio")
	b.ReportMetric(ms(pct(detourRTT, 0.5)), "intercept-conn-p50-ms")
	b.ReportMetric(ms(pct(detourRTT, 0.99)), "intercept-conn-p99-ms")
	b.ReportMetric(ms(pct(rawRTT, 0.5)), "raw-conn-p50-ms")
	b.ReportMetric(ms(pct(rawRTT, 0.99)), "raw-conn-p99-ms")
	b.ReportMetric(ms(pct(openRTT, 0.5)), "open-stream-rtt-p50-ms")
	b.ReportMetric(ms(pct(openRTT, 0.99)), "open-stream-rtt-p99-ms")
	b.ReportMetric(float64(pct(detourRTT, 0.5))/float64(pct(openRTT, 0.5)), "conn-p50/open-stream-p50")
	b.ReportMetric(float64(pct(detourRTT, 0.99))/float64(pct(openRTT, 0.99)), "conn-p99/open-stream-p99")
}
