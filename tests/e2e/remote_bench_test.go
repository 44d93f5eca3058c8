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
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	wrapper := filepath.Join(dir, "detour")
	script := fmt.Sprintf("#!/bin/sh\nexec nsenter --net=/run/netns/%s %s \"$@\"\n", line.Netns, detourBinary(b))
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		b.Fatal(err)
	}
	r.user = newUser(b)
	r.user.bin, r.user.kube = wrapper, r.kube
	return r
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

// BenchmarkRemoteCluster (issue 14 §4) measures an intercept as if the
// cluster were far away: the workstation (the daemon, its local echo
// server, and a raw kubectl port-forward for the baseline) runs in a
// network namespace whose traffic to the API server crosses a delay line
// (tests/internal/wan; this kernel has no netem), while the cluster client
// stays near the cluster (the host, to the Service). Each figure is beside
// the raw port-forward to the same pod under the same link, interleaved.
// It measures once, whatever b.N is: run it with -benchtime 1x.
func BenchmarkRemoteCluster(b *testing.B) {
	ctx := context.Background()
	cfg := restConfig(b)
	cs := clientset(b, cfg)
	newUser(b).must("install", "--image", images.Detour)
	ns := createNamespace(ctx, b, cs, "remote")
	svc := deployWeb(ctx, b, cs, ns, "web", 1)
	echoAddr := net.JoinHostPort(svc.Spec.ClusterIP, fmt.Sprint(echoTCPPort))
	r := newRemoteSide(b)
	localEcho := r.echoServer(b)
	r.user.must("intercept", "web", "-n", ns, "--port", fmt.Sprintf("%d:tcp-echo", localEcho))
	eventually(b, 30*time.Second, "echo intercepted", func() bool {
		c, err := net.DialTimeout("tcp", echoAddr, time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Write([]byte{1})
		_, err = io.ReadFull(c, make([]byte, 1))
		return err == nil
	})
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
	raw := net.JoinHostPort("127.0.0.1", fmt.Sprint(r.portForward(b, ns, pod.Name, echoTCPPort)))
	echoVia(b, hostDial, echoAddr, 1<<20)
	echoVia(b, r.dial, raw, 1<<20)

	profiles := []wanProfile{
		{"rtt0", 0, 0, 32 << 20},
		{"rtt20", 10 * time.Millisecond, 0, 32 << 20},
		{"rtt20-loss1", 10 * time.Millisecond, 0.01, 16 << 20},
		{"rtt80", 40 * time.Millisecond, 0, 16 << 20},
		{"rtt80-loss1", 40 * time.Millisecond, 0.01, 8 << 20},
	}
	const rounds = 2
	for _, p := range profiles {
		r.line.Set(p.delay, p.loss)
		var one, oneRaw, eight, eightRaw time.Duration
		for i := 0; i < rounds; i++ {
			paths := []struct {
				dial     dialFunc
				addr     string
				one, all *time.Duration
			}{{hostDial, echoAddr, &one, &eight}, {r.dial, raw, &oneRaw, &eightRaw}}
			if i%2 == 1 {
				paths[0], paths[1] = paths[1], paths[0]
			}
			for _, x := range paths {
				*x.one += echoVia(b, x.dial, x.addr, p.size)
				*x.all += parallelEcho(b, x.dial, x.addr, 8, p.size/8)
			}
		}
		mb := float64(rounds*2*p.size) / 1e6 // each echo carries size bytes each way
		b.ReportMetric(mb/one.Seconds(), p.name+"-intercept-1stream-MB/s")
		b.ReportMetric(mb/oneRaw.Seconds(), p.name+"-raw-1stream-MB/s")
		b.ReportMetric(oneRaw.Seconds()/one.Seconds(), p.name+"-1stream-ratio")
		b.ReportMetric(mb/eight.Seconds(), p.name+"-intercept-8streams-MB/s")
		b.ReportMetric(mb/eightRaw.Seconds(), p.name+"-raw-8streams-MB/s")
		b.ReportMetric(eightRaw.Seconds()/eight.Seconds(), p.name+"-8streams-ratio")
		// Small requests on an open connection, 300 ms apart.
		det := smallRequests(b, hostDial, echoAddr, 20, 300*time.Millisecond)
		rawReq := smallRequests(b, r.dial, raw, 20, 300*time.Millisecond)
		b.ReportMetric(ms(pct(det, 0.5)), p.name+"-intercept-req-p50-ms")
		b.ReportMetric(ms(pct(det, 0.95)), p.name+"-intercept-req-p95-ms")
		b.ReportMetric(ms(pct(rawReq, 0.5)), p.name+"-raw-req-p50-ms")
		b.ReportMetric(ms(pct(rawReq, 0.95)), p.name+"-raw-req-p95-ms")
		b.ReportMetric(ms(pct(det, 0.5))-ms(2*p.delay), p.name+"-intercept-req-p50-over-rtt-ms")
	}
	b.ReportMetric(float64(r.line.Drops()), "line-drops")
	for i := 0; i < b.N; i++ {
	}
}
