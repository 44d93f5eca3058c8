//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/detour-dev/detour/tests/internal/cluster"
	"github.com/detour-dev/detour/tests/internal/images"
	"github.com/detour-dev/detour/tests/internal/nsworld"
	"github.com/detour-dev/detour/tests/internal/wan"
)

// wanProfile is a remote cluster's link: delay each way (the round trip is
// twice it) and loss each way.
type wanProfile struct {
	name  string
	delay time.Duration
	loss  float64 // fraction
	size  int64   // bytes echoed each way per bulk round
}

type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

var hostDial dialFunc = (&net.Dialer{}).DialContext

// remoteSide is the workstation of a user whose cluster is far away: a
// network namespace behind a wan.Line whose API server traffic crosses the
// line (to a relay on the host's end that joins it to the API server), a
// kubeconfig for it, and a detour user running there.
type remoteSide struct {
	line *wan.Line
	kube string
	user *user
}

func newRemoteSide(b *testing.B) *remoteSide {
	line, err := wan.Start("detour-wan", cluster.APIServerPort)
	if err != nil {
		b.Fatalf("the delay line: %v", err)
	}
	b.Cleanup(func() { line.Close() })
	relay, err := wan.Relay(cluster.APIServerPort, net.JoinHostPort(cluster.NodeIP, fmt.Sprint(cluster.APIServerPort)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { relay.Close() })
	kc, err := clientcmd.LoadFromFile(kubeconfigPath())
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range kc.Clusters {
		c.Server = fmt.Sprintf("https://%s:%d", wan.HostAddr, cluster.APIServerPort)
		c.TLSServerName = cluster.NodeIP // the certificate names the node's address
	}
	dir := b.TempDir()
	r := &remoteSide{line: line, kube: filepath.Join(dir, "kubeconfig")}
	if err := clientcmd.WriteToFile(*kc, r.kube); err != nil {
		b.Fatal(err)
	}
	r.user = r.newUser(b, detourBinary(b))
	return r
}

// newUser is a detour user in the namespace running bin.
func (r *remoteSide) newUser(b *testing.B, bin string) *user {
	wrapper, err := os.CreateTemp(b.TempDir(), "detour-")
	if err != nil {
		b.Fatal(err)
	}
	fmt.Fprintf(wrapper, "#!/bin/sh\nexec nsenter --net=/run/netns/%s %s \"$@\"\n", r.line.Netns, bin)
	wrapper.Chmod(0o755)
	wrapper.Close()
	u := newUser(b)
	u.bin, u.kube = wrapper.Name(), r.kube
	return u
}

func (r *remoteSide) dial(ctx context.Context, _, addr string) (net.Conn, error) {
	return nsworld.Dial(ctx, r.line.Netns, addr)
}

// echoServer echoes every connection on the namespace's 127.0.0.1.
func (r *remoteSide) echoServer(b *testing.B) int {
	ln, err := nsworld.Listen(r.line.Netns, "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// portForward runs kubectl port-forward (over SPDY, as client-go's own
// port-forward) in the namespace and returns its local port there.
func (r *remoteSide) portForward(b *testing.B, ns, pod string, port int) int {
	kubectl := filepath.Join(cluster.DefaultConfig().K8sBinDir(), "kubectl")
	cmd := nsworld.Command(context.Background(), r.line.Netns, kubectl, "--kubeconfig", r.kube, "-n", ns, "port-forward", "pod/"+pod, fmt.Sprintf(":%d", port))
	cmd.Env = append(os.Environ(), "KUBECTL_PORT_FORWARD_WEBSOCKETS=false")
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n') // Forwarding from 127.0.0.1:PORT -> port
	var local int
	if _, serr := fmt.Sscanf(line, "Forwarding from 127.0.0.1:%d", &local); err != nil || serr != nil {
		b.Fatalf("kubectl port-forward said %q: %v %v", line, err, serr)
	}
	go io.Copy(io.Discard, out)
	return local
}

// echoVia sends size bytes on a new connection made with dial and reads
// them back.
func echoVia(b testing.TB, dial dialFunc, addr string, size int64) time.Duration {
	c, err := dial(context.Background(), "tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Minute))
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		_, err := io.CopyN(c, zeroReader{}, size)
		c.(*net.TCPConn).CloseWrite()
		errc <- err
	}()
	n, err := io.Copy(io.Discard, c)
	if werr := <-errc; werr != nil || err != nil || n != size {
		b.Fatalf("echo of %d bytes via %s: got %d back (%v, %v)", size, addr, n, werr, err)
	}
	return time.Since(start)
}

// parallelEcho echoes size bytes each way on each of n connections at once
// and returns the wall time.
func parallelEcho(b *testing.B, dial dialFunc, addr string, n int, size int64) time.Duration {
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); echoVia(b, dial, addr, size) }()
	}
	wg.Wait()
	return time.Since(start)
}

// smallRequests sends n 100-byte messages on one connection, each echoed
// back before the next, gap apart (an idle connection between requests, as
// a user's clicks are), and returns each round trip.
func smallRequests(b *testing.B, dial dialFunc, addr string, n int, gap time.Duration) []time.Duration {
	c, err := dial(context.Background(), "tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 100)
	got := make([]byte, len(msg))
	out := make([]time.Duration, 0, n)
	for i := 0; i < n+2; i++ { // two to warm up
		time.Sleep(gap)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			b.Fatalf("small request via %s: %v", addr, err)
		}
		if i >= 2 {
			out = append(out, time.Since(start))
		}
	}
	return out
}

// remotePath is one way to the echo: through an intercept or the raw
// port-forward, with what was measured on it.
type remotePath struct {
	name     string
	dial     dialFunc
	addr     string
	one, all time.Duration
	req      []time.Duration
	line     wan.Stats
}

// BenchmarkRemoteCluster (issue 14 §4) measures an intercept as if the
// cluster were far away: the workstation (the daemon, its local echo
// server, and a raw kubectl port-forward for the baseline) runs in a
// network namespace whose traffic to the API server crosses a delay line
// (tests/internal/wan; this kernel has no netem), while the cluster client
// stays near the cluster (the host, to the Service). Each figure is beside
// the raw port-forward to the same pod under the same link, interleaved.
// With DETOUR_BENCH_OTHER_DETOUR set to another build of cmd/detour, a
// second Deployment is intercepted by that build ("other") in the same
// rounds; its agent is this cluster's image (bin/), or, with
// DETOUR_BENCH_OTHER_AGENT set to that build's bin directory, an image of
// it (installed for the second Deployment only): a before/after of both
// sides, interleaved. It measures once, whatever b.N is: run
// it with -benchtime 1x.
func BenchmarkRemoteCluster(b *testing.B) {
	ctx := context.Background()
	cs := clientset(b, restConfig(b))
	newUser(b).must("install", "--image", images.Detour)
	ns := createNamespace(ctx, b, cs, "remote")
	r := newRemoteSide(b)
	localEcho := r.echoServer(b)
	svc := deployWeb(ctx, b, cs, ns, "web", 1)
	intercepted := r.intercept(b, r.user, ns, "web", svc, localEcho)
	pod := runningPod(ctx, b, cs, ns, "app=web")
	raw := net.JoinHostPort("127.0.0.1", fmt.Sprint(r.portForward(b, ns, pod, echoTCPPort)))
	paths := []*remotePath{{name: "intercept", dial: hostDial, addr: intercepted}, {name: "raw", dial: r.dial, addr: raw}}
	if other := os.Getenv("DETOUR_BENCH_OTHER_DETOUR"); other != "" {
		if dir := os.Getenv("DETOUR_BENCH_OTHER_AGENT"); dir != "" {
			installOtherImage(ctx, b, dir)
		}
		svc2 := deployWeb(ctx, b, cs, ns, "web2", 1)
		addr := r.intercept(b, r.newUser(b, other), ns, "web2", svc2, r.echoServer(b))
		paths = append(paths, &remotePath{name: "other", dial: hostDial, addr: addr})
		b.Logf("agents: web %s, web2 %s", agentImage(ctx, b, cs, ns, "app=web"), agentImage(ctx, b, cs, ns, "app=web2"))
	}
	for _, x := range paths {
		echoVia(b, x.dial, x.addr, 1<<20)
	}
	profiles := []wanProfile{
		{"rtt0", 0, 0, 32 << 20},
		{"rtt20", 10 * time.Millisecond, 0, 32 << 20},
		{"rtt20-loss1", 10 * time.Millisecond, 0.01, 16 << 20},
		{"rtt80", 40 * time.Millisecond, 0, 16 << 20},
		{"rtt80-loss1", 40 * time.Millisecond, 0.01, 8 << 20},
	}
	for _, p := range profiles {
		r.line.Set(p.delay, p.loss)
		r.measure(b, p, paths)
		report(b, p, paths)
	}
	b.ReportMetric(float64(r.line.Drops()), "line-drops")
	for i := 0; i < b.N; i++ {
	}
}

// otherImage is the image of DETOUR_BENCH_OTHER_AGENT's binaries.
const otherImage = "detour.local/detour:other"

// installOtherImage builds an image of another build's binaries (bin dir)
// into the cluster and installs detour with it, so that the workloads
// injected from here on get that build's agent while those injected before
// keep this tree's; Cleanup installs this tree's image again.
func installOtherImage(ctx context.Context, b *testing.B, dir string) {
	spec, err := images.DetourSpec(dir)
	if err != nil {
		b.Fatal(err)
	}
	spec.Ref = otherImage
	tarball := filepath.Join(b.TempDir(), "other.tar")
	if err := images.Write(spec, tarball); err != nil {
		b.Fatal(err)
	}
	if err := images.Import(ctx, zap.NewNop(), cluster.DefaultConfig().ContainerdSocket(), []string{tarball}); err != nil {
		b.Fatal(err)
	}
	admin := newUser(b)
	admin.must("install", "--image", otherImage)
	b.Cleanup(func() { admin.must("install", "--image", images.Detour) })
}

// agentImage is the image of the detour agent in a pod of selector.
func agentImage(ctx context.Context, b *testing.B, cs kubernetes.Interface, ns, selector string) string {
	pod, err := cs.CoreV1().Pods(ns).Get(ctx, runningPod(ctx, b, cs, ns, selector), metav1.GetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
		if strings.Contains(c.Image, "detour") {
			return c.Image
		}
	}
	return "none"
}

// intercept makes u intercept the echo port of workload name to the local
// echo server and returns the Service's echo address once it answers.
func (r *remoteSide) intercept(b *testing.B, u *user, ns, name string, svc *corev1.Service, localEcho int) string {
	addr := net.JoinHostPort(svc.Spec.ClusterIP, fmt.Sprint(echoTCPPort))
	u.must("intercept", name, "-n", ns, "--port", fmt.Sprintf("%d:tcp-echo", localEcho))
	eventually(b, 30*time.Second, name+" echo intercepted", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Write([]byte{1})
		_, err = io.ReadFull(c, make([]byte, 1))
		return err == nil
	})
	return addr
}

// runningPod names a pod of selector that is not being deleted.
func runningPod(ctx context.Context, b *testing.B, cs kubernetes.Interface, ns, selector string) string {
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil || len(pods.Items) == 0 {
		b.Fatalf("pods: %v", err)
	}
	pod := pods.Items[0]
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			pod = p
		}
	}
	return pod.Name
}

// remoteRounds is how many rounds of bulk each profile runs: 2, or
// DETOUR_BENCH_ROUNDS.
var remoteRounds = benchRounds(2)

// measure runs one profile: remoteRounds of bulk on each path (the order
// reversed in the second), then small requests, 300 ms apart, on each.
func (r *remoteSide) measure(b *testing.B, p wanProfile, paths []*remotePath) {
	for _, x := range paths {
		x.one, x.all = 0, 0
	}
	for i := 0; i < remoteRounds; i++ {
		order := slices.Clone(paths)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		for _, x := range order {
			x.one += echoVia(b, x.dial, x.addr, p.size)
			x.all += parallelEcho(b, x.dial, x.addr, 8, p.size/8)
		}
	}
	// The line counts each path's packets and how late it delivered them
	// (its own share of the time over the round trip).
	for _, x := range paths {
		r.line.ResetStats()
		x.req = smallRequests(b, x.dial, x.addr, 20, 300*time.Millisecond)
		x.line = r.line.Stats()
	}
}

// report prints one profile's figures, each path beside the raw one.
func report(b *testing.B, p wanProfile, paths []*remotePath) {
	const reqs = 22                                   // small requests: with the two to warm up
	mb := float64(int64(remoteRounds)*2*p.size) / 1e6 // each echo carries size bytes each way
	raw := paths[1]
	for _, x := range paths {
		b.ReportMetric(mb/x.one.Seconds(), p.name+"-"+x.name+"-1stream-MB/s")
		b.ReportMetric(mb/x.all.Seconds(), p.name+"-"+x.name+"-8streams-MB/s")
		if x != raw {
			b.ReportMetric(raw.one.Seconds()/x.one.Seconds(), p.name+"-"+x.name+"-1stream-ratio")
			b.ReportMetric(raw.all.Seconds()/x.all.Seconds(), p.name+"-"+x.name+"-8streams-ratio")
			b.ReportMetric(ms(pct(x.req, 0.5))-ms(2*p.delay), p.name+"-"+x.name+"-req-p50-over-rtt-ms")
		}
		b.ReportMetric(ms(pct(x.req, 0.5)), p.name+"-"+x.name+"-req-p50-ms")
		b.ReportMetric(ms(pct(x.req, 0.95)), p.name+"-"+x.name+"-req-p95-ms")
		b.ReportMetric(float64(x.line.ToNS+x.line.ToHost)/reqs, p.name+"-"+x.name+"-req-line-packets")
		b.ReportMetric(float64(x.line.LateP50().Microseconds()), p.name+"-"+x.name+"-line-late-p50-µs")
	}
}
