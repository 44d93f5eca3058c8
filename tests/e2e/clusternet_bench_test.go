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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"

	"github.com/detour-dev/detour/internal/annotations"
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
	// curl prints its connect time (name lookup included) and its total
	// time, in seconds, one line per transfer.
	curl := func(url string) []string {
		return []string{"curl", "-sS", "-o", "/dev/null", "-w", `%{time_connect} %{time_total}\n`, "--data-binary", "@" + body, url}
	}
	times := func(out string) (connect, total []float64) {
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line)
			if len(f) != 2 {
				b.Fatalf("curl said %q", out)
			}
			c, err1 := strconv.ParseFloat(f[0], 64)
			t, err2 := strconv.ParseFloat(f[1], 64)
			if err1 != nil || err2 != nil {
				b.Fatalf("curl said %q", out)
			}
			connect, total = append(connect, c), append(total, t)
		}
		return connect, total
	}
	seconds := func(out string) float64 {
		_, t := times(out)
		return t[len(t)-1]
	}
	u.must(append([]string{"run", "-n", ns, "--workload", "app", "--"}, curl("http://db:80/")...)...) // injects the agent, warms up
	rounds := benchRounds(5)
	// DETOUR_BENCH_OTHER_DETOUR: another build of cmd/detour (an earlier
	// tree's), measured in the same rounds: a before/after, interleaved.
	var other *user
	if bin := os.Getenv("DETOUR_BENCH_OTHER_DETOUR"); bin != "" {
		o := *u
		o.bin = bin
		other = &o
		other.must(append([]string{"run", "-n", ns, "--workload", "app", "--"}, curl("http://db:80/")...)...)
	}
	// DETOUR_BENCH_OTHER_AGENT: a directory with another build's binaries
	// (as make build leaves in bin/): that build's agent, injected into a
	// second workload, measured with this tree's detour in the same
	// rounds (the "other build" figures).
	otherWorkload := "app"
	if dir := os.Getenv("DETOUR_BENCH_OTHER_AGENT"); dir != "" {
		if other != nil {
			b.Fatal("DETOUR_BENCH_OTHER_DETOUR and DETOUR_BENCH_OTHER_AGENT: one at a time")
		}
		ref := importOtherAgent(ctx, b, dir)
		otherWorkload = "app-other"
		deployEcho(ctx, b, cs, ns, otherWorkload)
		patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{%q:%q}}}}}`, annotations.AgentImage, ref)
		if _, err := cs.AppsV1().Deployments(ns).Patch(ctx, otherWorkload, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			b.Fatal(err)
		}
		o := *u
		other = &o
		other.must(append([]string{"run", "-n", ns, "--workload", otherWorkload, "--"}, curl("http://db:80/")...)...)
	}
	var detour, raw, ratio, oth, vsOther, ws, wsRatio []float64
	mb := float64(2*16<<20) / 1e6 // up and back
	var connectMs []float64
	// The CPU each variant's transfer cost its agent (every thread's
	// run time, /proc/PID/task/*/schedstat) and the `detour run` process
	// tree (the runner, CMD's shell and curl, start-up included; rusage
	// of the test's reaped children), per MB: an agent or runner change
	// shows here even when the shared machine's load hides it in MB/s.
	agentCPU := map[*user][]float64{}
	runCPU := map[*user][]float64{}
	viaDetour := func(x *user) float64 {
		workload := "app"
		if x == other {
			workload = otherWorkload
		}
		agent := agentPid(ctx, b, cs, ns, workload)
		a0, c0 := threadsCPU(agent), takeCPUSnapshot().children
		r := x.must(append([]string{"run", "-n", ns, "--workload", workload, "--"}, curl("http://db:80/")...)...)
		agentCPU[x] = append(agentCPU[x], float64(threadsCPU(agent)-a0)/1e6/mb)
		runCPU[x] = append(runCPU[x], (takeCPUSnapshot().children-c0)/mb)
		c, t := times(r.stdout)
		if x == u { // not the other build's
			connectMs = append(connectMs, c[0]*1e3)
		}
		return mb / t[0]
	}
	// warm: three transfers in one runner, each after the one before;
	// the last two run on a session and port-forward already carrying
	// data, like the raw port-forward's (set up once for all rounds).
	// The machine's CPU (/proc/stat, every process) is read around the
	// last two: how much CPU the whole chain spends per MB, and how
	// idle the two cores were meanwhile.
	var warmCPU, rawCPU, warmIdle, rawIdle []float64
	warmRun := func() float64 {
		c := shellJoin(curl("http://db:80/"))
		script := c + "; head -1 /proc/stat >&2; " + c + "; " + c + "; head -1 /proc/stat >&2"
		r := u.must("run", "-n", ns, "--workload", "app", "--", "/bin/sh", "-c", script)
		_, t := times(r.stdout)
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		busy, idle := cpuBetween(b, lines[len(lines)-2], lines[len(lines)-1])
		warmCPU, warmIdle = append(warmCPU, busy/(2*mb)), append(warmIdle, idle)
		return mb / ((t[1] + t[2]) / 2)
	}
	var warm, warmRatio []float64
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
			before := procStat(b)
			out, err := exec.Command(args[0], args[1:]...).Output()
			if err != nil {
				b.Fatal(err)
			}
			if port == fwd {
				busy, idle := cpuBetween(b, before, procStat(b))
				rawCPU, rawIdle = append(rawCPU, busy/mb), append(rawIdle, idle)
			}
			return mb / seconds(string(out))
		}
		p := raw1(fwd)
		w := raw1(wsFwd)
		wm := warmRun()
		warm, warmRatio = append(warm, wm), append(warmRatio, wm/p)
		detour, raw, ratio = append(detour, d), append(raw, p), append(ratio, d/p)
		ws, wsRatio = append(ws, w), append(wsRatio, d/w)
		if other != nil {
			oth, vsOther = append(oth, o), append(vsOther, d/o)
		}
	}
	// Where the CPU goes: every process's CPU time around 3 transfers
	// over the raw port-forward, 3 in one detour run (its start-up and
	// exit, measured alone with `run -- true`, subtracted by name).
	rawUse, runUse, idleUse := cpuUse{}, cpuUse{}, cpuUse{}
	for range 2 {
		s0 := takeCPUSnapshot()
		for range 3 {
			args := curl(fmt.Sprintf("http://127.0.0.1:%d/", fwd))
			if err := exec.Command(args[0], args[1:]...).Run(); err != nil {
				b.Fatal(err)
			}
		}
		rawUse.add(takeCPUSnapshot().since(s0))
		s0 = takeCPUSnapshot()
		c := shellJoin(curl("http://db:80/"))
		u.must("run", "-n", ns, "--workload", "app", "--", "/bin/sh", "-c", c+"; "+c+"; "+c)
		runUse.add(takeCPUSnapshot().since(s0))
		s0 = takeCPUSnapshot()
		u.must("run", "-n", ns, "--workload", "app", "--", "true")
		idleUse.add(takeCPUSnapshot().since(s0))
	}
	for k, v := range idleUse {
		runUse[k] -= v
	}
	b.Logf("CPU per MB (6 transfers each, every process on the machine, others' jobs included): raw port-forward %s", rawUse.top(14, 6*mb))
	b.Logf("CPU per MB: detour run %s", runUse.top(14, 6*mb))
	b.ReportMetric(rawUse.total()/(6*mb), "portforward-all-cpu-ms/MB")
	b.ReportMetric(runUse.total()/(6*mb), "detour-all-cpu-ms/MB")
	b.Logf("MB/s per round (16 MiB up + back): detour run %v, raw port-forward %v, raw WebSocket port-forward %v, warm runner %v; detour run's connect (with name lookup) ms %v",
		round1(detour), round1(raw), round1(ws), round1(warm), round1(connectMs))
	b.Logf("machine CPU ms per MB: warm runner %v, raw port-forward %v; idle share of the 2 cores: warm runner %v, raw %v",
		round1(warmCPU), round1(rawCPU), round2(warmIdle), round2(rawIdle))
	b.ReportMetric(median(warmCPU), "warm-cpu-ms/MB")
	b.ReportMetric(median(rawCPU), "portforward-cpu-ms/MB")
	b.ReportMetric(median(warmIdle), "warm-idle")
	b.ReportMetric(median(rawIdle), "portforward-idle")
	b.ReportMetric(median(warm), "warm-MB/s")
	b.ReportMetric(median(warmRatio), "warm-ratio-median")
	b.ReportMetric(median(connectMs), "connect-ms")
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
		b.ReportMetric(median(agentCPU[other]), "other-agent-cpu-ms/MB")
		b.ReportMetric(median(runCPU[other]), "other-run-cpu-ms/MB")
		b.Logf("CPU ms per MB per round: agent %v, other build's %v; detour run %v, other build's %v",
			round2(agentCPU[u]), round2(agentCPU[other]), round2(runCPU[u]), round2(runCPU[other]))
	}
	b.ReportMetric(median(agentCPU[u]), "agent-cpu-ms/MB")
	b.ReportMetric(median(runCPU[u]), "run-cpu-ms/MB")
}

// agentPid finds the agent process of workload's live pod on this machine
// (the local cluster's node): the detour-agent whose cgroup is the pod's.
func agentPid(ctx context.Context, b *testing.B, cs kubernetes.Interface, ns, workload string) int {
	pod := livePod(ctx, b, cs, ns, "app="+workload)
	mark := "pod" + string(pod.UID)
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		comm, err1 := os.ReadFile(d + "/comm")
		cg, err2 := os.ReadFile(d + "/cgroup")
		if err1 == nil && err2 == nil && strings.TrimSpace(string(comm)) == "detour-agent" && strings.Contains(string(cg), mark) {
			pid, _ := strconv.Atoi(filepath.Base(d))
			return pid
		}
	}
	b.Fatalf("no detour-agent process in pod %s (%s)", pod.Name, mark)
	return 0
}

// threadsCPU is the time every thread of pid has run, in ns (schedstat).
func threadsCPU(pid int) int64 {
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var t int64
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil {
			if f := strings.Fields(string(b)); len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				t += n
			}
		}
	}
	return t
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

// shellJoin quotes args for /bin/sh -c.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

func round2(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(int(x*100)) / 100
	}
	return out
}

// procStat is the first line of /proc/stat: the machine's CPU time.
func procStat(t testing.TB) string {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return line
}

// cpuBetween reads two /proc/stat "cpu" lines: the busy CPU time between
// them in ms (all CPUs) and the idle share (idle + iowait over all).
func cpuBetween(t testing.TB, before, after string) (busyMs, idle float64) {
	t.Helper()
	parse := func(line string) (total, idle float64) {
		f := strings.Fields(line)
		if len(f) < 8 || f[0] != "cpu" {
			t.Fatalf("not a /proc/stat cpu line: %q", line)
		}
		for i, v := range f[1:8] { // user nice system idle iowait irq softirq
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("/proc/stat: %q", line)
			}
			total += x
			if i == 3 || i == 4 {
				idle += x
			}
		}
		return total, idle
	}
	t0, i0 := parse(before)
	t1, i1 := parse(after)
	if t1 <= t0 {
		return 0, 0
	}
	tick := 1000.0 / 100 // USER_HZ is 100 on Linux
	return (t1 - t0 - (i1 - i0)) * tick, (i1 - i0) / (t1 - t0)
}
