package netnstest

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/tests/internal/nsworld"
	"github.com/detour-dev/detour/tunnel"
)

// Benchmarks of the local process's cluster network (issue 11, "Measure";
// docs/benchmarks.md, "Local process's cluster network").
//
// The detour side is measured inside CMD: the runner runs as uid nobody
// (exactly as TestClusterNetworkRootless does) with the "bench" probe as
// CMD. The baselines run the same probe code in a process of their own, on
// the workstation (bulk: a raw connection through the same port-forward
// stand-in) or in the pod's network namespace (connect, DNS). Each probe
// reads commands on stdin and answers each with one JSON line, so one
// runner serves every round and the benchmark alternates the paths round by
// round (the order reversed in every other round), reporting the ratio of
// each round and their min and median.
//
// They measure once whatever b.N is: run them with -benchtime 1x (make
// bench does).

const (
	benchBulkPort = 7010 // the bulk server: in the cluster namespace, and on the pod's 127.0.0.1
	benchRounds   = 5
	benchBulkSize = 64 << 20
	benchConnects = 200 // sequential new connections per round
	benchLookups  = 200 // sequential lookups per round
	benchHeld     = 1000
	benchFQDN     = "db.shop.svc.cluster.local."
)

// probeResult is the probe's answer to one command, one JSON line.
type probeResult struct {
	Op      string  `json:"op"`
	Bytes   int64   `json:"bytes,omitempty"`
	NS      int64   `json:"ns,omitempty"`         // the transfer's wall time
	Samples []int64 `json:"samples_ns,omitempty"` // one per connection or lookup
	Open    int     `json:"open,omitempty"`
	Error   string  `json:"error,omitempty"`
}

// benchProbe is the probe's "bench" mode: commands on stdin, one JSON line
// on stdout for each, until stdin ends.
//
//	up ADDR SIZE [TUNNEL]   upload SIZE bytes to a bulk server at ADDR
//	down ADDR SIZE [TUNNEL] download SIZE bytes from it
//	connect ADDR N [TUNNEL] N times: new connection, 1 byte each way, close
//	                   With TUNNEL, the connection is a dial stream
//	                   (client.Session.Dial, as the runner's netstack
//	                   opens them) on a session through TUNNEL: detour's
//	                   path without the TUN and netstack.
//	dns NAME N SERVER  N lookups of NAME (Go's resolver, IPv4); SERVER "-" is
//	                   resolv.conf's nameserver, else HOST:PORT
//	hold ADDR N        open N connections (1 byte each way on each) and keep them
//	release            close them
//	ping               nothing: the probe is up
func benchProbe() int {
	var held []net.Conn
	var sess *client.Session
	in := bufio.NewScanner(os.Stdin)
	enc := json.NewEncoder(os.Stdout)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		r := probeResult{Op: f[0]}
		var err error
		if want := map[string]int{"up": 3, "down": 3, "connect": 3, "dns": 4, "hold": 3}[f[0]]; len(f) < want {
			r.Error = fmt.Sprintf("%s: want %d fields, got %q", f[0], want, f)
			_ = enc.Encode(r)
			continue
		}
		arg := func(i int) int {
			if i >= len(f) {
				err = fmt.Errorf("%s: missing argument %d", f[0], i)
				return 0
			}
			n, e := strconv.Atoi(f[i])
			if e != nil && err == nil {
				err = e
			}
			return n
		}
		switch f[0] {
		case "ping":
		case "up", "down", "connect":
			dial := func() (net.Conn, error) { return net.DialTimeout("tcp", f[1], 5*time.Second) }
			if len(f) > 3 {
				if sess == nil {
					sess, err = benchSession(f[3])
				}
				dst, perr := netip.ParseAddrPort(f[1])
				if err == nil {
					err = perr
				}
				dial = func() (net.Conn, error) {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					return sess.Dial(ctx, tunnel.NetworkTCP, dst)
				}
			}
			n := arg(2)
			if err != nil {
				break
			}
			if f[0] == "connect" {
				r.Samples, err = benchConnect(dial, n)
				break
			}
			var c net.Conn
			if c, err = dial(); err == nil {
				r.Bytes, r.NS, err = benchTransfer(c, f[0] == "up", int64(n))
			}
		case "dns":
			r.Samples, err = benchLookup(f[1], arg(2), f[3])
		case "hold":
			n := arg(2)
			for len(held) < n && err == nil {
				var c net.Conn
				if c, err = benchRoundTrip(func() (net.Conn, error) { return net.DialTimeout("tcp", f[1], 5*time.Second) }); err == nil {
					held = append(held, c)
				}
			}
			r.Open = len(held)
		case "release":
			for _, c := range held {
				c.Close()
			}
			held = nil
		default:
			err = fmt.Errorf("unknown bench command %q", f[0])
		}
		if err != nil {
			r.Error = err.Error()
		}
		_ = enc.Encode(r)
	}
	return 0
}

func benchSession(tunnelAddr string) (*client.Session, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := net.DialTimeout("tcp", tunnelAddr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return client.Open(ctx, c, client.Options{ClientID: "bench-baseline", User: "bench@laptop"})
}

// benchTransfer uploads (up) or downloads size bytes on c, a connection to
// a bulk server (serveBenchBulk), and closes it. The time runs from the
// first byte written to the server's confirmation (up) or the last byte
// read (down).
func benchTransfer(c net.Conn, up bool, size int64) (int64, int64, error) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	buf := make([]byte, 256<<10)
	start := time.Now()
	if !up {
		var req [9]byte
		req[0] = 'D'
		binary.BigEndian.PutUint64(req[1:], uint64(size))
		if _, err := c.Write(req[:]); err != nil {
			return 0, 0, err
		}
		n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, struct{ io.Reader }{c}, buf) // wrapped: io.Discard.ReadFrom would read 8 KiB at a time
		if err == nil && n != size {
			err = fmt.Errorf("received %d of %d bytes", n, size)
		}
		return n, time.Since(start).Nanoseconds(), err
	}
	buf[0] = 'U'
	first := 1
	for sent := int64(0); sent < size; {
		k := int(min(int64(len(buf)-first), size-sent))
		if _, err := c.Write(buf[:first+k]); err != nil {
			return sent, 0, err
		}
		sent += int64(k)
		if first == 1 {
			buf[0], first = 0, 0
		}
	}
	benchCloseWrite(c)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return size, 0, fmt.Errorf("no confirmation from the server: %w", err)
	}
	if n, _ := strconv.ParseInt(strings.TrimSpace(line), 10, 64); n != size {
		return n, 0, fmt.Errorf("the server got %d bytes, want %d", n, size)
	}
	return size, time.Since(start).Nanoseconds(), nil
}

func benchCloseWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close() // a yamux stream: Close is a half-close
}

// benchRoundTrip opens a connection to an echo server and sends and reads
// back one byte.
func benchRoundTrip(dial func() (net.Conn, error)) (net.Conn, error) {
	c, err := dial()
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	if _, err = c.Write([]byte{'x'}); err == nil {
		_, err = io.ReadFull(c, b[:])
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

func benchConnect(dial func() (net.Conn, error), n int) ([]int64, error) {
	out := make([]int64, 0, n)
	for range n {
		start := time.Now()
		c, err := benchRoundTrip(dial)
		if err != nil {
			return out, err
		}
		out = append(out, time.Since(start).Nanoseconds())
		c.Close()
	}
	return out, nil
}

// benchLookup resolves name n times to its IPv4 addresses with Go's
// resolver, through resolv.conf's nameserver or server. IPv4 only: the
// test's DNS server answers AAAA with an empty NOERROR that has neither
// SOA nor RA, which Go's resolver takes for a lame referral and asks
// again, so A+AAAA would measure two sequential round trips instead of
// one (on both sides alike); a real cluster DNS answers both in one.
func benchLookup(name string, n int, server string) ([]int64, error) {
	r := &net.Resolver{PreferGo: true}
	if server != "-" {
		r.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, server)
		}
	}
	out := make([]int64, 0, n)
	for range n {
		start := time.Now()
		addrs, err := r.LookupNetIP(context.Background(), "ip4", name)
		if err == nil && len(addrs) == 0 {
			err = errors.New("no address")
		}
		if err != nil {
			return out, err
		}
		out = append(out, time.Since(start).Nanoseconds())
	}
	return out, nil
}

// serveBenchBulk: a connection's first byte 'U' starts an upload (read to
// EOF with a 256 KiB buffer, then the count is sent back), 'D' and a
// big-endian u64 size a download of that many bytes.
func serveBenchBulk(tb testing.TB, ns, addr string) {
	tb.Helper()
	ln := listen(tb, ns, addr)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 256<<10)
				if _, err := io.ReadFull(c, buf[:1]); err != nil {
					return
				}
				switch buf[0] {
				case 'U':
					n, _ := io.CopyBuffer(struct{ io.Writer }{io.Discard}, struct{ io.Reader }{c}, buf) // wrapped: io.Discard.ReadFrom would read 8 KiB at a time
					fmt.Fprintf(c, "%d\n", n)
				case 'D':
					if _, err := io.ReadFull(c, buf[:8]); err != nil {
						return
					}
					size := int64(binary.BigEndian.Uint64(buf[:8]))
					clear(buf)
					for sent := int64(0); sent < size; {
						k := int(min(int64(len(buf)), size-sent))
						if _, err := c.Write(buf[:k]); err != nil {
							return
						}
						sent += int64(k)
					}
					_ = c.(*net.TCPConn).CloseWrite()
					_, _ = io.Copy(io.Discard, c)
				}
			}()
		}
	}()
}

// forwardToPodPort is forwardToPod for any port on the pod's 127.0.0.1:
// what a raw `kubectl port-forward` to that port gives, by the same
// stand-in (a splice relay from the workstation's loopback into the pod).
func forwardToPodPort(tb testing.TB, w *nsworld.World, port int) string {
	tb.Helper()
	ln := listen(tb, "", "127.0.0.1:0")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				p, err := nsworld.Dial(context.Background(), w.Pod, fmt.Sprintf("127.0.0.1:%d", port))
				if err != nil {
					c.Close()
					return
				}
				tunnel.Join(c, p)
			}()
		}
	}()
	return ln.Addr().String()
}

// benchProc is a running bench probe.
type benchProc struct {
	tb   testing.TB
	name string
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	errb *syncBuffer
	once sync.Once
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startBenchProc starts cmd (whose environment selects the bench probe)
// and waits until the probe answers.
func startBenchProc(tb testing.TB, name string, cmd *exec.Cmd) *benchProc {
	tb.Helper()
	p := &benchProc{tb: tb, name: name, cmd: cmd, errb: &syncBuffer{}}
	var err error
	if p.in, err = cmd.StdinPipe(); err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	p.out = bufio.NewReaderSize(out, 1<<20)
	cmd.Stderr = p.errb
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start the %s probe: %v", name, err)
	}
	tb.Cleanup(p.stop)
	p.do("ping")
	return p
}

// do sends one command and returns the probe's answer; a probe error or
// silence for a minute fails the benchmark.
func (p *benchProc) do(format string, a ...any) probeResult {
	p.tb.Helper()
	line := fmt.Sprintf(format, a...)
	timer := time.AfterFunc(time.Minute, func() { _ = p.cmd.Process.Signal(syscall.SIGQUIT) })
	defer timer.Stop()
	var r probeResult
	_, err := fmt.Fprintln(p.in, line)
	var raw string
	if err == nil {
		raw, err = p.out.ReadString('\n')
	}
	if err == nil {
		err = json.Unmarshal([]byte(raw), &r)
	}
	if err == nil && r.Error != "" {
		err = errors.New(r.Error)
	}
	if err != nil {
		p.tb.Fatalf("%s probe, %q: %v (output %q)\nstderr:\n%s", p.name, line, err, raw, p.errb.String())
	}
	return r
}

// stop ends the probe (end of stdin) and waits for it and, for the runner,
// its namespace.
func (p *benchProc) stop() { p.once.Do(p.stopOnce) }

func (p *benchProc) stopOnce() {
	_ = p.in.Close()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			p.tb.Errorf("%s probe exit: %v\n%s", p.name, err, p.errb.String())
		}
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
		p.tb.Errorf("%s probe did not exit at the end of its input", p.name)
	}
}

// benchWorld is the cluster world with the bulk servers and the probes'
// places: the detour probe (CMD, via the runner as nobody), a probe on the
// workstation and one in the pod's network namespace.
type benchWorld struct {
	*clusterWorld
	cluster   string // ADDR:PORT of the bulk server in the cluster namespace
	echo      string // the echo server in the cluster namespace
	bulkPF    string // the port-forward stand-in to the pod's bulk server
	podServer string // the pod's nameserver
}

func startBenchWorld(b *testing.B) *benchWorld {
	b.Helper()
	cw := startClusterWorld(b, "--log-level", "warn")
	openTUN(b, 0o666)
	bw := &benchWorld{clusterWorld: cw,
		cluster:   fmt.Sprintf("%s:%d", cw.w.ClientIP, benchBulkPort),
		echo:      fmt.Sprintf("%s:%d", cw.w.ClientIP, echoBulkPort),
		podServer: cw.w.ClientIP.String() + ":53",
	}
	serveBenchBulk(b, cw.w.Client, bw.cluster)
	serveBenchBulk(b, cw.w.Pod, fmt.Sprintf("127.0.0.1:%d", benchBulkPort))
	bw.bulkPF = forwardToPodPort(b, cw.w, benchBulkPort)
	return bw
}

// detour starts the runner as nobody with the bench probe as CMD. It
// returns the probe and the runner's pid (the netstack's owner).
func (bw *benchWorld) detour(b *testing.B) (*benchProc, int) {
	return bw.detourFrom(b, "detour", bw.binary)
}

// detourFrom is detour with the runner (and CMD's probe) from binary,
// another build of this test binary.
func (bw *benchWorld) detourFrom(b *testing.B, name, binary string) (*benchProc, int) {
	cmd := bw.command("bench")
	cmd.Path, cmd.Args = binary, []string{binary, binary}
	cmd.Env = append(cmd.Env, alsoProxyEnv+"=")
	p := startBenchProc(b, name, cmd)
	return p, cmd.Process.Pid
}

// otherBuildEnv names another build of this test binary (`go test -c` of
// an earlier tree) whose runner the bulk and connect benchmarks measure
// too, in the same rounds: a before/after of a change, interleaved, as
// other-* metrics and detour ÷ other ratios.
const otherBuildEnv = "DETOUR_BENCH_OTHER_BUILD"

// otherBuild copies the binary DETOUR_BENCH_OTHER_BUILD names where nobody
// can run it; "" when it is not set.
func otherBuild(b *testing.B) string {
	src := os.Getenv(otherBuildEnv)
	if src == "" {
		return ""
	}
	data, err := os.ReadFile(src)
	if err != nil {
		b.Fatalf("%s: %v", otherBuildEnv, err)
	}
	dir := b.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	for d := filepath.Dir(dir); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o755) // b.TempDir's parents are 0700
	}
	dst := filepath.Join(dir, "other.test")
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		b.Fatal(err)
	}
	return dst
}

// workstation starts the probe on the workstation, pod in the pod's
// network namespace.
func (bw *benchWorld) workstation(b *testing.B) *benchProc {
	cmd := exec.Command(bw.binary)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/tmp", probeEnv + "=bench"}
	return startBenchProc(b, "workstation", cmd)
}

func (bw *benchWorld) pod(b *testing.B) *benchProc {
	cmd := nsworld.Command(context.Background(), bw.w.Pod, bw.binary)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/tmp", probeEnv + "=bench"}
	return startBenchProc(b, "pod", cmd)
}

// interleave runs the paths benchRounds times, the order reversed every
// other round.
func interleave(rounds int, paths ...func()) {
	for r := range rounds {
		if r%2 == 0 {
			for _, f := range paths {
				f()
			}
		} else {
			for i := len(paths) - 1; i >= 0; i-- {
				paths[i]()
			}
		}
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func nsPercentile(samples []int64, p float64) float64 {
	s := slices.Clone(samples)
	slices.Sort(s)
	return float64(s[int(float64(len(s)-1)*p)]) / 1e3 // µs
}

func mbpsOf(r probeResult) float64 { return float64(r.Bytes) / 1e6 / (float64(r.NS) / 1e9) }

// BenchmarkClusterNetwork measures the local process's cluster network
// against its baselines (see the top of the file).
func BenchmarkClusterNetwork(b *testing.B) {
	bw := startBenchWorld(b)
	rounds := benchRounds
	if n, err := strconv.Atoi(os.Getenv("DETOUR_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n // for profiling: a longer run
	}
	// bulk: one connection from CMD to a server in the cluster namespace
	// (TUN → netstack → tunnel dial stream → the agent's dial from the
	// pod), against the same bytes on a raw connection through the same
	// port-forward stand-in to the same server code on the pod's
	// 127.0.0.1 (what `kubectl port-forward` to the pod gives). "tunnel"
	// (information): the detour path without TUN and netstack, a dial
	// stream from the workstation to the same cluster server.
	for _, dir := range []string{"up", "down"} {
		b.Run("bulk-"+dir, func(b *testing.B) {
			detour, pid := bw.detour(b)
			ws := bw.workstation(b)
			detour.do("%s %s %d", dir, bw.cluster, 1<<20) // warm up
			ws.do("%s %s %d", dir, bw.bulkPF, 1<<20)
			ws.do("%s %s %d %s", dir, bw.cluster, 1<<20, bw.tunnel)
			var d, base, tun, oth []float64
			var cpu, othCPU time.Duration // the runners', over their rounds
			paths := []func(){
				func() { base = append(base, mbpsOf(ws.do("%s %s %d", dir, bw.bulkPF, benchBulkSize))) },
				func() { tun = append(tun, mbpsOf(ws.do("%s %s %d %s", dir, bw.cluster, benchBulkSize, bw.tunnel))) },
				func() {
					cpu0 := processCPU(b, pid)
					d = append(d, mbpsOf(detour.do("%s %s %d", dir, bw.cluster, benchBulkSize)))
					cpu += processCPU(b, pid) - cpu0
				},
			}
			if bin := otherBuild(b); bin != "" {
				other, opid := bw.detourFrom(b, "other build", bin)
				other.do("%s %s %d", dir, bw.cluster, 1<<20)
				paths = append(paths, func() {
					cpu0 := processCPU(b, opid)
					oth = append(oth, mbpsOf(other.do("%s %s %d", dir, bw.cluster, benchBulkSize)))
					othCPU += processCPU(b, opid) - cpu0
				})
			}
			interleave(rounds, paths...)
			if len(oth) > 0 {
				vs := make([]float64, len(d))
				for i := range d {
					vs[i] = d[i] / oth[i]
				}
				b.ReportMetric(median(oth), "other-MB/s")
				b.ReportMetric(median(vs), "vs-other-median")
				b.ReportMetric(slices.Min(vs), "vs-other-min")
				b.ReportMetric(float64(othCPU.Microseconds())/(float64(rounds)*benchBulkSize/1e6), "other-cpu-µs/MB")
				b.Logf("MB/s per round: other build %.0f", oth)
			}
			ratios := make([]float64, len(d))
			tunRatios := make([]float64, len(d))
			for i := range d {
				ratios[i], tunRatios[i] = d[i]/base[i], d[i]/tun[i]
			}
			b.ReportMetric(median(d), "detour-MB/s")
			b.ReportMetric(median(base), "portforward-MB/s")
			b.ReportMetric(median(tun), "tunnel-MB/s")
			b.ReportMetric(median(ratios), "ratio-median")
			b.ReportMetric(slices.Min(ratios), "ratio-min")
			b.ReportMetric(median(tunRatios), "vs-tunnel-median")
			b.ReportMetric(float64(cpu.Microseconds())/(float64(rounds)*benchBulkSize/1e6), "runner-cpu-µs/MB")
			b.Logf("MB/s per round: detour %.0f, port-forward %.0f, tunnel %.0f", d, base, tun)
		})
	}
	// connect: a new connection and a 1-byte round trip, from CMD to an
	// echo server in the cluster namespace, against the same from the
	// pod's network namespace; "tunnel" (information) as for bulk.
	b.Run("connect", func(b *testing.B) {
		detour, _ := bw.detour(b)
		pod, ws := bw.pod(b), bw.workstation(b)
		detour.do("connect %s 20", bw.echo)
		pod.do("connect %s 20", bw.echo)
		ws.do("connect %s 20 %s", bw.echo, bw.tunnel)
		var d, base, tun, oth []int64
		paths := []func(){
			func() { base = append(base, pod.do("connect %s %d", bw.echo, benchConnects).Samples...) },
			func() { tun = append(tun, ws.do("connect %s %d %s", bw.echo, benchConnects, bw.tunnel).Samples...) },
			func() { d = append(d, detour.do("connect %s %d", bw.echo, benchConnects).Samples...) },
		}
		if bin := otherBuild(b); bin != "" {
			other, _ := bw.detourFrom(b, "other build", bin)
			other.do("connect %s 20", bw.echo)
			paths = append(paths, func() { oth = append(oth, other.do("connect %s %d", bw.echo, benchConnects).Samples...) })
		}
		interleave(rounds, paths...)
		if len(oth) > 0 {
			vs := roundRatios(d, oth, rounds, benchConnects)
			b.ReportMetric(nsPercentile(oth, 0.5), "other-p50-µs")
			b.ReportMetric(nsPercentile(oth, 0.99), "other-p99-µs")
			b.ReportMetric(median(vs), "p50-vs-other-median")
		}
		ratios := roundRatios(d, base, rounds, benchConnects)
		b.ReportMetric(nsPercentile(d, 0.5), "detour-p50-µs")
		b.ReportMetric(nsPercentile(d, 0.99), "detour-p99-µs")
		b.ReportMetric(nsPercentile(base, 0.5), "pod-p50-µs")
		b.ReportMetric(nsPercentile(base, 0.99), "pod-p99-µs")
		b.ReportMetric(nsPercentile(tun, 0.5), "tunnel-p50-µs")
		b.ReportMetric(median(ratios), "p50-ratio-median")
		b.ReportMetric(slices.Min(ratios), "p50-ratio-min")
	})
	// dns: Go's resolver in CMD (its resolv.conf names detour's resolver,
	// which asks the agent on a DNS stream) against the same lookup in
	// the pod's network namespace, sent to the pod's nameserver. A fully
	// qualified name: no search-path expansion on either side.
	b.Run("dns", func(b *testing.B) {
		detour, _ := bw.detour(b)
		pod := bw.pod(b)
		detour.do("dns %s 20 -", benchFQDN)
		pod.do("dns %s 20 %s", benchFQDN, bw.podServer)
		var d, base []int64
		interleave(rounds,
			func() { base = append(base, pod.do("dns %s %d %s", benchFQDN, benchLookups, bw.podServer).Samples...) },
			func() { d = append(d, detour.do("dns %s %d -", benchFQDN, benchLookups).Samples...) },
		)
		ratios := roundRatios(d, base, rounds, benchLookups)
		b.ReportMetric(nsPercentile(d, 0.5), "detour-p50-µs")
		b.ReportMetric(nsPercentile(d, 0.99), "detour-p99-µs")
		b.ReportMetric(nsPercentile(base, 0.5), "pod-p50-µs")
		b.ReportMetric(median(ratios), "p50-ratio-median")
		b.ReportMetric(slices.Min(ratios), "p50-ratio-min")
	})
	// memory: the runner's RSS (it owns the netstack) idle and with 1,000
	// open connections from CMD to the cluster; then, in a fresh runner,
	// after 1,000 lookups (each from a socket of its own, as a stub
	// resolver does: 1,000 UDP flows). anon is the part that is not the
	// binary's own pages.
	b.Run("memory", func(b *testing.B) {
		detour, pid := bw.detour(b)
		time.Sleep(500 * time.Millisecond)
		idle, idleAnon := processRSS(b, pid)
		if r := detour.do("hold %s %d", bw.echo, benchHeld); r.Open != benchHeld {
			b.Fatalf("%d connections open, want %d", r.Open, benchHeld)
		}
		loaded, loadedAnon := processRSS(b, pid)
		detour.do("release")
		detour.stop()
		detour, pid = bw.detour(b)
		time.Sleep(500 * time.Millisecond)
		_, dnsIdleAnon := processRSS(b, pid)
		detour.do("dns %s %d -", benchFQDN, benchHeld)
		_, dnsAnon := processRSS(b, pid)
		b.ReportMetric(float64(idle)/mib, "idle-MiB")
		b.ReportMetric(float64(idleAnon)/mib, "idle-anon-MiB")
		b.ReportMetric(float64(loaded)/mib, "1000conns-MiB")
		b.ReportMetric(float64(loadedAnon)/mib, "1000conns-anon-MiB")
		b.ReportMetric(float64(loadedAnon-idleAnon)/benchHeld/1024, "KiB/conn")
		b.ReportMetric(float64(dnsAnon)/mib, "1000lookups-anon-MiB")
		b.ReportMetric(float64(dnsAnon-dnsIdleAnon)/benchHeld/1024, "KiB/lookup")
	})
}

// roundRatios is detour's p50 ÷ the baseline's, round by round (each
// round's n samples are consecutive).
func roundRatios(d, base []int64, rounds, n int) []float64 {
	var out []float64
	for r := range rounds {
		w := func(s []int64) []int64 { return s[r*n : (r+1)*n] }
		out = append(out, nsPercentile(w(d), 0.5)/nsPercentile(w(base), 0.5))
	}
	return out
}

// processRSS reads a process's resident set size, and its anonymous part,
// from /proc.
func processRSS(tb testing.TB, pid int) (rss, anon int64) {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	field := func(name string) int64 {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, name+":"); ok {
				kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				if err != nil {
					tb.Fatal(err)
				}
				return kb * 1024
			}
		}
		tb.Fatalf("no %s for pid %d", name, pid)
		return 0
	}
	return field("VmRSS"), field("RssAnon")
}

// processCPU reads a process's user+system CPU time from /proc.
func processCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// The fields after the command name (which may hold spaces), from
	// field 3: utime and stime are fields 14 and 15, in clock ticks.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}
