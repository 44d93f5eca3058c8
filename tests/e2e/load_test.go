//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/detour-dev/detour/tests/internal/images"
)

// Load on the real cluster: large transfers through an intercept, and
// intercepts created and left while traffic flows.

// TestLargeTransfer sends 1 GiB up to the workstation and 1 GiB down from
// it through a tcp intercept: host → ClusterIP → pod → agent → port-forward
// → daemon → local server. Both ends hash the bytes; the hashes must match.
func TestLargeTransfer(t *testing.T) {
	const size = 1 << 30
	ctx := context.Background()
	cs := clientset(t, restConfig(t))
	u := newUser(t)
	u.must("install", "--image", images.Detour)
	ns := createNamespace(ctx, t, cs, "load")
	svc := deployWeb(ctx, t, cs, ns, "web", 1)
	base := fmt.Sprintf("http://%s:80", svc.Spec.ClusterIP)
	eventually(t, time.Minute, "the Service answers before any intercept", func() bool { return strings.HasPrefix(who(base+"/"), "hello from web-") })

	srv := loadBulkServer(t, size)
	u.must("intercept", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", srv.port))
	if !waitForSteady(t, base+"/", "workstation", 10, kubeProxyLag) {
		t.Fatalf("%s", agentLogs(ctx, cs, ns, "app=web"))
	}

	// Five minutes for both directions together; at the port-forward's
	// ~130 MB/s (docs/benchmarks.md) they need about 20 s.
	tctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	t.Run("upload", func(t *testing.T) {
		sent := sha256.New()
		req, err := http.NewRequestWithContext(tctx, http.MethodPut, base+"/upload", io.TeeReader(io.LimitReader(loadStream(), size), sent))
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = size
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("upload: %v", err)
		}
		defer resp.Body.Close()
		answer, err := io.ReadAll(resp.Body)
		d := time.Since(start)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("upload: %s %q %v", resp.Status, answer, err)
		}
		want := fmt.Sprintf("%d %x", int64(size), sent.Sum(nil))
		if got := strings.TrimSpace(string(answer)); got != want {
			t.Fatalf("the workstation received %q, want %q", got, want)
		}
		t.Logf("upload of %d MiB: %s, %.0f MB/s, sha256 %x equal on both ends (load average after: %s)", size>>20, d.Round(time.Millisecond), float64(size)/1e6/d.Seconds(), sent.Sum(nil), loadAverage())
	})

	t.Run("download", func(t *testing.T) {
		req, err := http.NewRequestWithContext(tctx, http.MethodGet, base+"/download", nil)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("download: %v", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("download: %s", resp.Status)
		}
		got := sha256.New()
		n, err := io.Copy(got, resp.Body)
		d := time.Since(start)
		if err != nil || n != size {
			t.Fatalf("download: %d of %d bytes: %v", n, size, err)
		}
		sentN, sentSum := srv.sent()
		if sentN != size || !slices.Equal(got.Sum(nil), sentSum) {
			t.Fatalf("download: received sha256 %x, the workstation sent %d bytes with sha256 %x", got.Sum(nil), sentN, sentSum)
		}
		t.Logf("download of %d MiB: %s, %.0f MB/s, sha256 %x equal on both ends (load average after: %s)", size>>20, d.Round(time.Millisecond), float64(size)/1e6/d.Seconds(), sentSum, loadAverage())
	})
}

// loadAverage is the machine's 1, 5 and 15 minute load averages: the
// figures above depend on what else runs on it.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

// loadStream is the deterministic byte stream both directions carry.
func loadStream() io.Reader { return rand.NewChaCha8([32]byte{'d', 'e', 't', 'o', 'u', 'r'}) }

// loadBulk is the workstation's server for TestLargeTransfer: PUT /upload
// answers "COUNT SHA256" of the body it read, GET /download serves size
// bytes of loadStream and records their hash, anything else answers
// "workstation".
type loadBulk struct {
	port    int
	mu      sync.Mutex
	sentN   int64
	sentSum []byte
}

func loadBulkServer(t testing.TB, size int64) *loadBulk {
	b := &loadBulk{}
	b.port = loadServe(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPut && r.URL.Path == "/upload":
			h := sha256.New()
			n, err := io.Copy(h, r.Body)
			if err != nil {
				http.Error(w, fmt.Sprintf("read after %d bytes: %v", n, err), http.StatusBadRequest)
				return
			}
			fmt.Fprintf(w, "%d %x\n", n, h.Sum(nil))
		case r.Method == http.MethodGet && r.URL.Path == "/download":
			w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
			h := sha256.New()
			n, _ := io.Copy(io.MultiWriter(w, h), io.LimitReader(loadStream(), size))
			b.mu.Lock()
			b.sentN, b.sentSum = n, h.Sum(nil)
			b.mu.Unlock()
		default:
			io.Copy(io.Discard, r.Body)
			fmt.Fprintln(w, "workstation")
		}
	}))
	return b
}

func (b *loadBulk) sent() (int64, []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sentN, b.sentSum
}

// loadServe serves h on 127.0.0.1 and returns the port.
func loadServe(t testing.TB, h http.Handler) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// TestChurnUnderLoad runs 20 intercept create/leave cycles, alternating the
// tcp and http (--http-match x-dev=churn) mechanisms, on a 2-replica
// Deployment while a bounded load (loadPlainWorkers + loadHeaderWorkers
// paced workers, GETs on new connections to the ClusterIP from the host)
// runs against it. Each request is classified by when it ran:
//
//   - outside every intercept window (from `detour intercept` starting to
//     `detour leave` returning), and header-less requests in http cycles:
//     meant for the app: a 200 from the app, or it is a failure;
//   - wholly inside a window's steady part (after `intercept` returned,
//     before `leave` started), tcp cycles and header requests in http
//     cycles: meant for the workstation: a 200 from it, or a failure;
//   - overlapping a switch (tcp cycles; header requests of http cycles):
//     may land on either side, but must get a 200 within loadTimeout
//     (the workstation answers after loadLocalDelay, so some are in flight
//     on the tunnel when an intercept is left);
//   - whenever they ran, connections that never reached a pod (see
//     loadUnroutedPrefix) are counted apart: the cluster's network, not
//     detour.
//
// The agent is injected (one intercept and leave, the rollout waited for)
// before the load starts, so no endpoint changes during it: intercepts do
// not change endpoints, and kube-proxy lag (see waitForSteady) plays no part.
func TestChurnUnderLoad(t *testing.T) {
	const (
		cycles  = 20
		hold    = 3 * time.Second // intercept held
		gap     = 2 * time.Second // app only, between cycles
		maxLoad = 4 * time.Minute // the load's bound, whatever happens
	)
	ctx := context.Background()
	cs := clientset(t, restConfig(t))
	u := newUser(t)
	u.must("install", "--image", images.Detour)
	ns := createNamespace(ctx, t, cs, "churn")
	svc := deployWeb(ctx, t, cs, ns, "web", 2)
	url := fmt.Sprintf("http://%s:80/", svc.Spec.ClusterIP)
	isApp := func(s string) bool { return strings.HasPrefix(s, "hello from web-") }
	eventually(t, time.Minute, "the Service answers before any intercept", func() bool { return isApp(who(url)) })

	// The workstation takes loadLocalDelay per request, so that requests
	// are in flight on the tunnel when an intercept is left.
	local := loadServe(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		time.Sleep(loadLocalDelay)
		fmt.Fprintln(w, "workstation")
	}))
	name := "web-" + ns
	tcpArgs := []string{"intercept", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", local)}
	httpArgs := append(slices.Clone(tcpArgs), "--http-match", loadHeader+"="+loadHeaderValue)

	// Inject the agents (the first intercept rolls the Deployment), wait
	// for kube-proxy to have the new pods, and give the traffic back.
	u.must(tcpArgs...)
	if !waitForSteady(t, url, "workstation", 20, kubeProxyLag) {
		t.Fatalf("%s", agentLogs(ctx, cs, ns, "app=web"))
	}
	u.must("leave", name)
	steadily(t, "the app answers after the first leave", 20, kubeProxyLag, func() string { return who(url) }, isApp)

	lctx, stop := context.WithTimeout(ctx, maxLoad)
	rec := &loadRecorder{start: time.Now()}
	endpoints := loadWatchEndpoints(lctx, t, cs, ns, "web", rec.start)
	var workers sync.WaitGroup
	for i := range loadPlainWorkers + loadHeaderWorkers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			rec.work(lctx, url, i >= loadPlainWorkers)
		}()
	}
	defer func() { stop(); workers.Wait() }() // also when the test stops early
	time.Sleep(gap)                           // traffic before the first switch

	var windows []loadWindow
	for i := range cycles {
		w := loadWindow{http: i%2 == 1}
		args := tcpArgs
		if w.http {
			args = httpArgs
		}
		w.createStart = time.Now()
		r := u.run(args...)
		w.createEnd = time.Now()
		if r.code == 0 {
			time.Sleep(hold)
		} else {
			t.Errorf("cycle %d: detour %s:\n%s", i, strings.Join(args, " "), r)
		}
		// Leave even after a failed intercept: it may hold some pods.
		w.leaveStart = time.Now()
		lr := u.run("leave", name)
		w.leaveEnd = time.Now()
		windows = append(windows, w)
		if r.code == 0 && lr.code != 0 {
			t.Errorf("cycle %d: detour leave:\n%s", i, lr)
		}
		if r.code != 0 || lr.code != 0 {
			break
		}
		time.Sleep(gap)
		if lctx.Err() != nil {
			t.Errorf("only %d of %d cycles within the load's bound of %s", i+1, cycles, maxLoad)
			break
		}
	}
	stop()
	workers.Wait()
	// Intercepts change no endpoints: a change here (a pod's readiness
	// flapping) would explain failures outside the agent.
	if changes := endpoints(); len(changes) > 0 {
		t.Logf("the Service's endpoints changed during the load:\n%s", strings.Join(changes, "\n"))
	} else {
		t.Logf("the Service's endpoints did not change during the load")
	}
	loadReport(t, rec, windows)
}

// loadWatchEndpoints records every change to the Service's EndpointSlices
// until ctx ends; the returned function gives them, one line each.
func loadWatchEndpoints(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, service string, origin time.Time) func() []string {
	w, err := cs.DiscoveryV1().EndpointSlices(ns).Watch(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
	if err != nil {
		t.Fatalf("watch the endpoints of %s: %v", service, err)
	}
	var mu sync.Mutex
	var changes []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			es, ok := ev.Object.(*discoveryv1.EndpointSlice)
			if !ok || ev.Type == watch.Added { // the watch starts with the current state
				continue
			}
			var eps []string
			for _, e := range es.Endpoints {
				eps = append(eps, fmt.Sprintf("%v ready=%v terminating=%v", e.Addresses, e.Conditions.Ready != nil && *e.Conditions.Ready, e.Conditions.Terminating != nil && *e.Conditions.Terminating))
			}
			mu.Lock()
			changes = append(changes, fmt.Sprintf("  +%s %s: %s", time.Since(origin).Round(time.Millisecond), ev.Type, strings.Join(eps, ", ")))
			mu.Unlock()
		}
	}()
	return func() []string {
		w.Stop()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return changes
	}
}

// The load: loadPlainWorkers workers send GETs without the header, and
// loadHeaderWorkers with it, each at most one per loadInterval, on a new
// connection each (keep-alive off), with loadTimeout as client timeout.
const (
	loadPlainWorkers  = 8
	loadHeaderWorkers = 2
	loadInterval      = 50 * time.Millisecond
	loadTimeout       = 5 * time.Second
	loadLocalDelay    = 100 * time.Millisecond
	loadHeader        = "x-dev"
	loadHeaderValue   = "churn"
)

// loadWindow is one intercept's life as the test saw it.
type loadWindow struct {
	http                   bool
	createStart, createEnd time.Time
	leaveStart, leaveEnd   time.Time
}

type loadRequest struct {
	header     bool
	start, end time.Time
	answer     string // "app", "workstation", or what went wrong
}

type loadRecorder struct {
	start time.Time
	mu    sync.Mutex
	reqs  []loadRequest
}

func (rec *loadRecorder) work(ctx context.Context, url string, header bool) {
	c := &http.Client{Timeout: loadTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	tick := time.NewTicker(loadInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		r := loadRequest{header: header, start: time.Now()}
		r.answer = loadGet(c, url, header)
		r.end = time.Now()
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, r)
		rec.mu.Unlock()
	}
}

// loadGet sends one request (not bound to the load's context: a request
// in flight when the load stops finishes, or times out, on its own).
func loadGet(c *http.Client, url string, header bool) string {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err.Error()
	}
	if header {
		req.Header.Set(loadHeader, loadHeaderValue)
	}
	resp, err := c.Do(req)
	if errors.Is(err, syscall.EHOSTUNREACH) {
		return loadUnroutedPrefix + err.Error()
	}
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	body := strings.TrimSpace(string(b))
	switch {
	case err != nil:
		return fmt.Sprintf("%s, body cut after %d bytes: %v", resp.Status, len(b), err)
	case resp.StatusCode != http.StatusOK:
		return fmt.Sprintf("%s: %.100q", resp.Status, body)
	case body == "workstation":
		return "workstation"
	case strings.HasPrefix(body, "hello from web-"):
		return "app"
	}
	return fmt.Sprintf("unexpected body %.100q", body)
}

// loadUnroutedPrefix marks a request whose connection never reached a pod:
// the host's SYN to the ClusterIP went unanswered and, after ~3 s, came
// back EHOSTUNREACH. The same load against a Deployment without detour
// (no agent, no intercept, endpoints unchanged) meets it too: 2 in 29,842
// connections on the local cluster, against 0 to 3 in ~17,500 in this test.
// The neighbour table of the cluster's namespace then holds a FAILED entry
// for the ClusterIP itself on dk8s-sink, the port-less bridge where service
// traffic that missed kube-proxy's DNAT ends. detour cannot cause it: a pod
// that is there answers the SYN whatever its agent does. Such requests are
// counted apart and tolerated up to loadUnroutedMax.
const loadUnroutedPrefix = "never reached a pod: "

// loadUnroutedMax is how many unrouted requests the test tolerates.
func loadUnroutedMax(total int) int { return 2 + total/2000 }

// Request classes and what each accepts.
const (
	loadUnrouted     = "never reached a pod (cluster network, not detour)"
	loadOutside      = "outside intercepts (app only)"
	loadHTTPNoHeader = "http cycles, no header (app only)"
	loadTCPSteady    = "tcp cycles, steady (workstation only)"
	loadHeaderSteady = "http cycles, header, steady (workstation only)"
	loadTCPSwitch    = "tcp cycles, at a switch (either)"
	loadHeaderSwitch = "http cycles, header, at a switch (either)"
)

var loadClasses = []string{loadOutside, loadHTTPNoHeader, loadTCPSteady, loadHeaderSteady, loadTCPSwitch, loadHeaderSwitch, loadUnrouted}

// loadClassify says which class r falls in and which answers it accepts.
func loadClassify(r loadRequest, windows []loadWindow) (class string, ok func(answer string) bool) {
	app := func(a string) bool { return a == "app" }
	workstation := func(a string) bool { return a == "workstation" }
	either := func(a string) bool { return a == "app" || a == "workstation" }
	if strings.HasPrefix(r.answer, loadUnroutedPrefix) {
		return loadUnrouted, func(string) bool { return false }
	}
	for _, w := range windows {
		if r.end.Before(w.createStart) || r.start.After(w.leaveEnd) {
			continue
		}
		steady := r.start.After(w.createEnd) && r.end.Before(w.leaveStart)
		switch {
		case w.http && !r.header:
			return loadHTTPNoHeader, app
		case w.http && steady:
			return loadHeaderSteady, workstation
		case w.http:
			return loadHeaderSwitch, either
		case steady:
			return loadTCPSteady, workstation
		default:
			return loadTCPSwitch, either
		}
	}
	return loadOutside, app
}

// loadReport classifies every request, logs counts, failures and
// latencies per class, and fails the test on any failure.
func loadReport(t *testing.T, rec *loadRecorder, windows []loadWindow) {
	t.Helper()
	type failures struct {
		n        int
		examples []string
	}
	type stats struct {
		n, failed, app, workstation int
		lat                         []time.Duration
		max                         time.Duration
		slowest                     string
		kinds                       map[string]*failures // by what went wrong
	}
	per := map[string]*stats{}
	for _, c := range loadClasses {
		per[c] = &stats{kinds: map[string]*failures{}}
	}
	var maxLat time.Duration
	rec.mu.Lock()
	reqs := slices.Clone(rec.reqs)
	rec.mu.Unlock()
	if len(reqs) == 0 {
		t.Fatal("the load sent no requests")
	}
	describe := func(r loadRequest) string {
		return fmt.Sprintf("at +%s (%s, header %v): %s; %s", r.start.Sub(rec.start).Round(time.Millisecond),
			r.end.Sub(r.start).Round(time.Millisecond), r.header, r.answer, loadNearest(r, windows, rec.start))
	}
	for _, r := range reqs {
		class, ok := loadClassify(r, windows)
		s := per[class]
		s.n++
		lat := r.end.Sub(r.start)
		if lat > s.max {
			s.max, s.slowest = lat, describe(r)
		}
		s.lat = append(s.lat, lat)
		maxLat = max(maxLat, lat)
		switch r.answer {
		case "app":
			s.app++
		case "workstation":
			s.workstation++
		}
		if !ok(r.answer) {
			s.failed++
			kind := r.answer
			if _, rest, found := strings.Cut(kind, `/": `); found { // Get "http://…/": what went wrong
				kind = rest
			}
			f := s.kinds[kind]
			if f == nil {
				f = &failures{}
				s.kinds[kind] = f
			}
			f.n++
			if len(f.examples) < 3 {
				f.examples = append(f.examples, describe(r))
			}
		}
	}
	for i, w := range windows {
		mech := "tcp"
		if w.http {
			mech = "http"
		}
		t.Logf("cycle %2d %-4s: intercept at +%s took %s, held until +%s, leave took %s",
			i, mech, w.createStart.Sub(rec.start).Round(time.Millisecond), w.createEnd.Sub(w.createStart).Round(time.Millisecond),
			w.leaveStart.Sub(rec.start).Round(time.Millisecond), w.leaveEnd.Sub(w.leaveStart).Round(time.Millisecond))
	}
	total, failed := 0, 0
	for _, c := range loadClasses {
		s := per[c]
		total += s.n
		if c != loadUnrouted {
			failed += s.failed
		}
		if s.n == 0 {
			t.Logf("%-48s: no requests", c)
			continue
		}
		t.Logf("%-48s: %6d requests, %4d failed; app %6d, workstation %6d; latency p50 %s p99 %s max %s",
			c, s.n, s.failed, s.app, s.workstation,
			pct(s.lat, 0.5).Round(time.Millisecond), pct(s.lat, 0.99).Round(time.Millisecond), pct(s.lat, 1).Round(time.Millisecond))
		t.Logf("    slowest %s", s.slowest)
		for kind, f := range s.kinds {
			t.Logf("    %d failed with %q, e.g.:", f.n, kind)
			for _, e := range f.examples {
				t.Logf("        %s", e)
			}
		}
	}
	t.Logf("%d requests in %s over %d cycles, %d failed, %d never reached a pod; max latency %s (client timeout %s)",
		total, reqs[len(reqs)-1].end.Sub(rec.start).Round(time.Second), len(windows), failed, per[loadUnrouted].n, maxLat.Round(time.Millisecond), loadTimeout)
	if failed > 0 {
		t.Errorf("%d of %d requests failed (see the classes above)", failed, total)
	}
	if n, most := per[loadUnrouted].n, loadUnroutedMax(total); n > most {
		t.Errorf("%d of %d requests never reached a pod, more than the %d the cluster's network alone explains", n, total, most)
	}
	for _, c := range []string{loadOutside, loadHTTPNoHeader, loadTCPSteady, loadHeaderSteady} {
		if per[c].n == 0 {
			t.Errorf("no requests in class %q: the load did not cover it", c)
		}
	}
}

// loadNearest names the intercept event closest to r, for failure messages.
func loadNearest(r loadRequest, windows []loadWindow, origin time.Time) string {
	best, what := time.Duration(1<<62), "no intercept"
	for i, w := range windows {
		for _, e := range []struct {
			at   time.Time
			name string
		}{{w.createStart, "intercept started"}, {w.createEnd, "intercept returned"}, {w.leaveStart, "leave started"}, {w.leaveEnd, "leave returned"}} {
			d := r.start.Sub(e.at)
			if d < 0 {
				d = -d
			}
			if d < best {
				best, what = d, fmt.Sprintf("cycle %d %s at +%s", i, e.name, e.at.Sub(origin).Round(time.Millisecond))
			}
		}
	}
	return what
}
