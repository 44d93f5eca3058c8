//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/detour-dev/detour/tests/internal/images"
)

// BenchmarkClusterNewConnection breaks a new intercepted connection's
// round trip down (issue 14 §3), in interleaved rounds on one pod:
//
//   - open-stream: 1-byte echoes over an established raw port-forward
//     stream (client-go), the floor of this design;
//   - intercept-stream: 1-byte echoes over one established connection
//     through the intercept (Service → agent → tunnel → port-forward →
//     daemon → local echo): the relays' cost per round trip;
//   - intercept-conn: a new connection through the intercept + 1 byte;
//   - tcp-connect: the TCP handshake alone to the Service's intercepted
//     port (answered by the pod's kernel, before the agent sees it).
//
// DETOUR_BENCH_OTHER_DETOUR (another build of cmd/detour) adds its
// intercept-stream and intercept-conn in the same rounds, every other
// round in reverse order. DETOUR_BENCH_TRACE=1 logs each new connection's
// client-side timestamps (Unix ns) by local port, to join with the lines of
// a build that traces its agent and daemon.
func BenchmarkClusterNewConnection(b *testing.B) {
	ctx := context.Background()
	cfg := restConfig(b)
	cs := clientset(b, cfg)
	u := newUser(b)
	u.must("install", "--image", images.Detour)
	ns := createNamespace(ctx, b, cs, "newconn")
	svc := deployWeb(ctx, b, cs, ns, "web", 1)
	echoAddr := net.JoinHostPort(svc.Spec.ClusterIP, fmt.Sprint(echoTCPPort))
	localEcho := tcpEchoServer(b)
	trace := os.Getenv("DETOUR_BENCH_TRACE") != ""

	type variant struct {
		name         string
		u            *user
		stream, conn []time.Duration
	}
	variants := []*variant{{name: "now", u: u}}
	if other := os.Getenv("DETOUR_BENCH_OTHER_DETOUR"); other != "" {
		o := newUser(b)
		o.bin = other
		variants = append(variants, &variant{name: "other", u: o})
	}
	intercept := func(x *variant) {
		x.u.must("intercept", "web", "-n", ns, "--port", fmt.Sprintf("%d:tcp-echo", localEcho))
		eventually(b, 10*time.Second, "echo intercepted", func() bool { return streamRTTOK(echoAddr) })
	}
	// The first intercept injects the agent; the pod after the rollout is
	// the one measured.
	intercept(variants[0])
	variants[0].u.must("leave", "web-"+ns)
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil || len(pods.Items) == 0 {
		b.Fatalf("pods: %v", err)
	}
	pod := pods.Items[0]
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			pod = p
		}
	}
	raw := net.JoinHostPort("127.0.0.1", fmt.Sprint(portForward(ctx, b, cfg, cs, &pod, echoTCPPort)[0]))

	const rounds, perRound = 5, 60
	var open, handshake []time.Duration
	for i := 0; i < rounds; i++ {
		open = append(open, streamRTT(b, raw, perRound)...)
		order := slices.Clone(variants)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		for _, x := range order {
			intercept(x)
			x.stream = append(x.stream, streamRTT(b, echoAddr, perRound)...)
			x.conn = append(x.conn, tracedConnectRTT(b, echoAddr, perRound, trace)...)
			if x == variants[0] {
				handshake = append(handshake, connectOnly(b, echoAddr, perRound)...)
			}
			x.u.must("leave", "web-"+ns)
		}
	}
	if trace {
		logTraces(ctx, b, cs, &pod, variants[0].u)
	}
	for i := 0; i < b.N; i++ {
	}
	report := func(d []time.Duration, name string) {
		b.ReportMetric(ms(pct(d, 0.5)), name+"-p50-ms")
		b.ReportMetric(ms(pct(d, 0.99)), name+"-p99-ms")
	}
	report(open, "open-stream")
	report(handshake, "tcp-connect")
	for _, x := range variants {
		prefix := ""
		if x.name != "now" {
			prefix = x.name + "-"
		}
		report(x.stream, prefix+"intercept-stream")
		report(x.conn, prefix+"intercept-conn")
		b.ReportMetric(float64(pct(x.conn, 0.5))/float64(pct(open, 0.5)), prefix+"conn/open-stream-p50")
		b.ReportMetric(float64(pct(x.conn, 0.99))/float64(pct(open, 0.99)), prefix+"conn/open-stream-p99")
	}
}

// streamRTTOK reports whether a new connection to addr echoes a byte.
func streamRTTOK(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte{'x'}); err != nil {
		return false
	}
	_, err = io.ReadFull(c, make([]byte, 1))
	return err == nil
}

// tracedConnectRTT is connectRTT that, with trace, logs each connection's
// local port and its start, connected, written and echoed times (Unix ns).
func tracedConnectRTT(tb testing.TB, addr string, n int, trace bool) []time.Duration {
	out := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			tb.Fatal(err)
		}
		connected := time.Now()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte{'x'}); err != nil {
			tb.Fatal(err)
		}
		written := time.Now()
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			tb.Fatalf("1-byte round trip via %s: %v", addr, err)
		}
		end := time.Now()
		out = append(out, end.Sub(start))
		if trace {
			tb.Logf("conntrace client port=%d start=%d connected=%d written=%d echoed=%d",
				c.LocalAddr().(*net.TCPAddr).Port, start.UnixNano(), connected.UnixNano(), written.UnixNano(), end.UnixNano())
		}
		c.Close()
	}
	return out
}

// connectOnly times n TCP handshakes to addr, each connection closed at
// once.
func connectOnly(tb testing.TB, addr string, n int) []time.Duration {
	out := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, time.Since(start))
		c.Close()
	}
	return out
}

// logTraces logs the conntrace lines of pod's agent and of u's daemon.
func logTraces(ctx context.Context, tb testing.TB, cs kubernetes.Interface, pod *corev1.Pod, u *user) {
	raw, err := cs.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{Container: "detour-agent"}).DoRaw(ctx)
	if err != nil {
		tb.Logf("agent log: %v", err)
	}
	daemon, _ := os.ReadFile(filepath.Join(u.home, "daemon.log"))
	for _, l := range strings.Split(string(raw)+string(daemon), "\n") {
		if strings.Contains(l, "conntrace") {
			tb.Log(l)
		}
	}
}
