//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

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
	const rounds = 5
	var detour, raw, ratio []float64
	mb := float64(2*16<<20) / 1e6 // up and back
	for i := 0; i < rounds; i++ {
		r := u.must(append([]string{"run", "-n", ns, "--workload", "app", "--"}, curl("http://db:80/")...)...)
		d := mb / seconds(r.stdout)
		out, err := exec.Command(curl(fmt.Sprintf("http://127.0.0.1:%d/", fwd))[0], curl(fmt.Sprintf("http://127.0.0.1:%d/", fwd))[1:]...).Output()
		if err != nil {
			b.Fatal(err)
		}
		p := mb / seconds(string(out))
		detour, raw, ratio = append(detour, d), append(raw, p), append(ratio, d/p)
	}
	b.Logf("MB/s per round (16 MiB up + back): detour run %v, raw port-forward %v", round1(detour), round1(raw))
	slices.Sort(ratio)
	b.ReportMetric(median(detour), "detour-MB/s")
	b.ReportMetric(median(raw), "portforward-MB/s")
	b.ReportMetric(ratio[len(ratio)/2], "ratio-median")
	b.ReportMetric(ratio[0], "ratio-min")
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
