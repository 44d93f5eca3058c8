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
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"go.uber.org/zap"

	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/tests/internal/cluster"
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
//   - intercept-conn: a new connection through the intercept + 1 byte, one
//     after another (the previous one's close overlaps);
//   - intercept-conn-apart: the same, 5 ms apart (nothing else in flight);
//   - tcp-connect: the TCP handshake alone to the Service's intercepted
//     port (answered by the pod's kernel, before the agent sees it).
//
// Before/after, interleaved: DETOUR_BENCH_OTHER_DETOUR (another build of
// cmd/detour) runs its daemon on the same pod, DETOUR_BENCH_OTHER_AGENT (a
// directory with another build's binaries, as make build leaves in bin/)
// runs that build's agent on a second Deployment, with this tree's daemon;
// each adds its figures in the same rounds, every other round in reverse
// order. DETOUR_BENCH_TRACE=1 logs each new connection's client-side
// timestamps (Unix ns), and the "conntrace" lines of the agent and the
// daemon, for a build that traces them (testdata/conntrace.patch).
func BenchmarkClusterNewConnection(b *testing.B) {
	ctx := context.Background()
	cfg := restConfig(b)
	cs := clientset(b, cfg)
	u := newUser(b)
	u.must("install", "--image", images.Detour)
	ns := createNamespace(ctx, b, cs, "newconn")
	svc := deployWeb(ctx, b, cs, ns, "web", 1)
	localEcho := tcpEchoServer(b)
	trace := os.Getenv("DETOUR_BENCH_TRACE") != ""

	type variant struct {
		name, workload, addr string
		u                    *user
		stream, conn, apart  []time.Duration
	}
	echoAddr := func(svc *corev1.Service) string {
		return net.JoinHostPort(svc.Spec.ClusterIP, fmt.Sprint(echoTCPPort))
	}
	now := &variant{name: "now", workload: "web", addr: echoAddr(svc), u: u}
	variants := []*variant{now}
	if other := os.Getenv("DETOUR_BENCH_OTHER_DETOUR"); other != "" {
		o := newUser(b)
		o.bin = other
		variants = append(variants, &variant{name: "other-daemon", workload: "web", addr: now.addr, u: o})
	}
	if dir := os.Getenv("DETOUR_BENCH_OTHER_AGENT"); dir != "" {
		osvc := deployOtherAgent(ctx, b, cs, ns, dir)
		variants = append(variants, &variant{name: "other-agent", workload: "web-other", addr: echoAddr(osvc), u: u})
	}
	intercept := func(x *variant) {
		x.u.must("intercept", x.workload, "-n", ns, "--port", fmt.Sprintf("%d:tcp-echo", localEcho))
		eventually(b, 10*time.Second, "echo intercepted", func() bool { return streamRTTOK(x.addr) })
	}
	leave := func(x *variant) { x.u.must("leave", x.workload+"-"+ns) }
	// The first intercept of each workload injects its agent; the pods
	// after the rollout are the ones measured.
	for _, x := range variants {
		if x.name != "other-daemon" {
			intercept(x)
			leave(x)
		}
	}
	pod := livePod(ctx, b, cs, ns, "app=web")
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
			x.stream = append(x.stream, streamRTT(b, x.addr, perRound)...)
			x.conn = append(x.conn, tracedConnectRTT(b, x.addr, perRound, 0, trace)...)
			x.apart = append(x.apart, tracedConnectRTT(b, x.addr, perRound, 5*time.Millisecond, false)...)
			if x == now {
				handshake = append(handshake, connectOnly(b, x.addr, perRound)...)
			}
			leave(x)
		}
	}
	if trace {
		logTraces(ctx, b, cs, &pod, now.u)
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
		if x != now {
			prefix = x.name + "-"
		}
		report(x.stream, prefix+"intercept-stream")
		report(x.conn, prefix+"intercept-conn")
		report(x.apart, prefix+"intercept-conn-apart")
		b.ReportMetric(float64(pct(x.conn, 0.5))/float64(pct(open, 0.5)), prefix+"conn/open-stream-p50")
		b.ReportMetric(float64(pct(x.conn, 0.99))/float64(pct(open, 0.99)), prefix+"conn/open-stream-p99")
	}
}

// importOtherAgent builds an image of the detour binaries in dir, tagged
// apart from this tree's, into the cluster's containerd, and returns its
// reference.
// deployOtherAgent deploys web-other, a second web whose pods get the
// agent of the build in dir (importOtherAgent) once it is intercepted.
func deployOtherAgent(ctx context.Context, b *testing.B, cs kubernetes.Interface, ns, dir string) *corev1.Service {
	ref := importOtherAgent(ctx, b, dir)
	osvc := deployWeb(ctx, b, cs, ns, "web-other", 1)
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{%q:%q}}}}}`, annotations.AgentImage, ref)
	if _, err := cs.AppsV1().Deployments(ns).Patch(ctx, "web-other", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		b.Fatal(err)
	}
	return osvc
}

func importOtherAgent(ctx context.Context, tb testing.TB, dir string) string {
	spec, err := images.DetourSpec(dir)
	if err != nil {
		tb.Fatal(err)
	}
	spec.Ref = "detour.local/detour:other"
	tar := filepath.Join(tb.TempDir(), "other.tar")
	if err := images.Write(spec, tar); err != nil {
		tb.Fatal(err)
	}
	if err := images.Import(ctx, zap.NewNop(), cluster.DefaultConfig().ContainerdSocket(), []string{tar}); err != nil {
		tb.Fatal(err)
	}
	return spec.Ref
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

// tracedConnectRTT is connectRTT with gap between a connection's close and
// the next one's start that, with trace, logs each connection's local port
// and its start, connected, written and echoed times (Unix ns).
func tracedConnectRTT(tb testing.TB, addr string, n int, gap time.Duration, trace bool) []time.Duration {
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
		time.Sleep(gap)
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
