//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"

	"github.com/detour-dev/detour/tests/internal/images"
)

// BenchmarkClusterNetworkBulk: 16 MiB up to a cluster Service and back
// (the echo server's POST echoes its body), sent by curl from inside CMD's
// namespace with `detour run` — through netstack, the tunnel, the agent's
// dial from the pod and the Service — against the same curl from the
// workstation over a raw port-forward to the same pod. Interleaved rounds;
// curl's own time_total is the figure (detour's start-up is not in it).
func BenchmarkClusterNetworkBulk(b *testing.B) {
	if _, err := exec.LookPath("curl"); err != nil {
		b.Skip("needs curl")
	}
	ctx := context.Background()
	cfg := restConfig(b)
	cs := clientset(b, cfg)
	u := newUser(b)
	u.must("install", "--image", images.Detour)
	ns := createNamespace(ctx, b, cs, "cnbench")
	dbPod, _ := deployEcho(ctx, b, cs, ns, "db")
	deployEcho(ctx, b, cs, ns, "app")
	// Names outside the cluster (none here) would ask loopback: nothing
	// leaves the machine.
	resolv := filepath.Join(b.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 127.0.0.1\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Setenv("DETOUR_WORKSTATION_RESOLV_CONF", resolv)
	body := filepath.Join(b.TempDir(), "body")
	if err := os.WriteFile(body, make([]byte, 16<<20), 0o644); err != nil {
		b.Fatal(err)
	}
	fwd := portForward(ctx, b, cfg, cs, dbPod, echoHTTPPort)[0]
	wsFwd := portForwardWebSocket(b, cfg, cs, dbPod, echoHTTPPort)
	curl := func(url string) []string {
		return []string{"curl", "-sS", "-o", "/dev/null", "-w", "%{time_total}", "--data-binary", "@" + body, url}
	}
	seconds := func(out string) float64 {
		f, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
		if err != nil {
			b.Fatalf("curl said %q", out)
		}
		return f
	}
	u.must(append([]string{"run", "-n", ns, "--workload", "app", "--"}, curl("http://db:80/")...)...) // injects the agent, warms up
	rounds := 5
	if n, err := strconv.Atoi(os.Getenv("DETOUR_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	// DETOUR_BENCH_OTHER_DETOUR: another build of cmd/detour (an earlier
	// tree's), measured in the same rounds: a before/after, interleaved.
	var other *user
	if bin := os.Getenv("DETOUR_BENCH_OTHER_DETOUR"); bin != "" {
		o := *u
		o.bin = bin
		other = &o
		other.must(append([]string{"run", "-n", ns, "--workload", "app", "--"}, curl("http://db:80/")...)...)
	}
	var detour, raw, ratio, oth, vsOther, ws, wsRatio []float64
	mb := float64(2*16<<20) / 1e6 // up and back
	viaDetour := func(u *user) float64 {
		r := u.must(append([]string{"run", "-n", ns, "--workload", "app", "--"}, curl("http://db:80/")...)...)
		return mb / seconds(r.stdout)
	}
	for i := 0; i < rounds; i++ {
		var d, o float64
		if other != nil && i%2 == 1 { // the builds alternate which goes first
			o = viaDetour(other)
		}
		d = viaDetour(u)
		if other != nil && i%2 == 0 {
			o = viaDetour(other)
		}
		raw1 := func(port uint16) float64 {
			args := curl(fmt.Sprintf("http://127.0.0.1:%d/", port))
			out, err := exec.Command(args[0], args[1:]...).Output()
			if err != nil {
				b.Fatal(err)
			}
			return mb / seconds(string(out))
		}
		p := raw1(fwd)
		w := raw1(wsFwd)
		detour, raw, ratio = append(detour, d), append(raw, p), append(ratio, d/p)
		ws, wsRatio = append(ws, w), append(wsRatio, d/w)
		if other != nil {
			oth, vsOther = append(oth, o), append(vsOther, d/o)
		}
	}
	b.Logf("MB/s per round (16 MiB up + back): detour run %v, raw port-forward %v, raw WebSocket port-forward %v", round1(detour), round1(raw), round1(ws))
	slices.Sort(ratio)
	b.ReportMetric(median(detour), "detour-MB/s")
	b.ReportMetric(median(raw), "portforward-MB/s")
	b.ReportMetric(ratio[len(ratio)/2], "ratio-median")
	b.ReportMetric(ratio[0], "ratio-min")
	b.ReportMetric(median(ws), "ws-portforward-MB/s")
	b.ReportMetric(median(wsRatio), "vs-ws-median")
	if other != nil {
		b.Logf("MB/s per round: other build %v", round1(oth))
		otherRatio := make([]float64, len(oth))
		for i := range oth {
			otherRatio[i] = oth[i] / raw[i]
		}
		b.ReportMetric(median(oth), "other-MB/s")
		b.ReportMetric(median(otherRatio), "other-ratio-median")
		b.ReportMetric(median(vsOther), "vs-other-median")
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func round1(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(int(x*10)) / 10
	}
	return out
}

// portForwardWebSocket is portForward over the transport detour's own
// port-forward (client/internal/kube.DialPod) and kubectl ≥ 1.31 use:
// SPDY tunnelled through a WebSocket to the API server (portForward is
// SPDY end to end). The bulk baseline is measured over both, since the
// WebSocket leg (client-side masking, the API server's translation to
// SPDY) costs CPU on the same cores.
func portForwardWebSocket(t testing.TB, cfg *rest.Config, cs kubernetes.Interface, pod *corev1.Pod, port int) uint16 {
	t.Helper()
	url := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("portforward").URL()
	dialer, err := portforward.NewSPDYOverWebsocketDialer(url, cfg)
	if err != nil {
		t.Fatalf("websocket port-forward dialer: %v", err)
	}
	stop, ready := make(chan struct{}), make(chan struct{})
	var out, errOut bytes.Buffer
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", port)}, stop, ready, &out, &errOut)
	if err != nil {
		t.Fatalf("websocket port-forward: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- fw.ForwardPorts() }()
	t.Cleanup(func() {
		close(stop)
		<-done
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("websocket port-forward failed before ready: %v %s", err, errOut.String())
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) != 1 {
		t.Fatalf("websocket port-forward ports: %v %v", ports, err)
	}
	return ports[0].Local
}
