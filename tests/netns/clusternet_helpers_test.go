package netnstest

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/proxy"

	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/client/cli"
	"github.com/detour-dev/detour/tests/internal/nsworld"
)

// The cluster-network helpers: the test binary re-executed (1) as an
// unprivileged user running what `detour run` runs (cli.RunClusterNetwork)
// against a tunnel address, and (2) as the command inside, a probe that
// resolves, dials and listens as an application would.
const (
	clusterRunEnv = "DETOUR_NETNS_CLUSTERRUN" // tunnel address (a port-forward stand-in)
	exposeEnv     = "DETOUR_NETNS_EXPOSE"     // ports, comma-separated
	alsoProxyEnv  = "DETOUR_NETNS_ALSO_PROXY" // a CIDR
	probeEnv      = "DETOUR_NETNS_PROBE"
	noUserNSEnv   = "DETOUR_NETNS_NO_USERNS" // set user.max_user_namespaces=0 in the runner's own user namespace first
)

func clusterRunMain() int {
	if os.Getenv(noUserNSEnv) != "" {
		return execWithoutUserNamespaces()
	}
	addr := os.Getenv(clusterRunEnv)
	var ports []uint16
	for _, p := range strings.Split(os.Getenv(exposeEnv), ",") {
		if n, err := strconv.Atoi(p); err == nil {
			ports = append(ports, uint16(n))
		}
	}
	connect := func(ctx context.Context) (*client.Session, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return client.Open(ctx, c, client.Options{ClientID: "runner", User: "runner@laptop"})
	}
	var also []netip.Prefix
	if p, err := netip.ParsePrefix(os.Getenv(alsoProxyEnv)); err == nil {
		also = append(also, p)
	}
	args := os.Args[1:]
	os.Unsetenv(clusterRunEnv) // the command is the probe, not another runner
	code, err := cli.RunClusterNetwork(context.Background(), cli.ClusterRun{
		Connect: connect, What: "deploy/app", Command: args, Env: map[string]string{"APP_ENV": "from-the-pod"},
		Ports: ports, AlsoProxy: also, Stderr: os.Stderr,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "detour:", err)
		return 1
	}
	return code
}

// execWithoutUserNamespaces runs as root of a user namespace of its own
// (runOpts.noUserNS): it sets user.max_user_namespaces=0 there — the limit
// is per user namespace, so the machine's own stays as it is — then
// becomes nobody and re-executes itself as the runner, which can then
// create no user namespace, exactly as with the sysctl set machine-wide.
func execWithoutUserNamespaces() int {
	if err := os.WriteFile("/proc/sys/user/max_user_namespaces", []byte("0"), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "set user.max_user_namespaces=0:", err)
		return 1
	}
	os.Unsetenv(noUserNSEnv)
	for _, err := range []error{syscall.Setgroups(nil), syscall.Setgid(65534), syscall.Setuid(65534)} {
		if err != nil {
			fmt.Fprintln(os.Stderr, "become nobody:", err)
			return 1
		}
	}
	self, err := os.Executable()
	if err == nil {
		err = syscall.Exec(self, os.Args, os.Environ())
	}
	fmt.Fprintln(os.Stderr, "re-execute as the runner:", err)
	return 1
}

// probeMain is the command run inside the namespace.
func probeMain() int {
	args := strings.Fields(os.Getenv(probeEnv))
	out := func(format string, a ...any) int { fmt.Printf(format+"\n", a...); return 0 }
	fail := func(code int, err error) int { fmt.Printf("error: %v\n", err); return code }
	switch args[0] {
	case "lookup":
		addrs, err := net.DefaultResolver.LookupHost(context.Background(), args[1])
		if err != nil {
			var de *net.DNSError
			if errors.As(err, &de) && de.IsNotFound {
				return out("nxdomain")
			}
			return fail(3, err)
		}
		sort.Strings(addrs)
		return out("%s", strings.Join(addrs, ","))
	case "ptr":
		names, err := net.DefaultResolver.LookupAddr(context.Background(), args[1])
		if err != nil {
			return fail(3, err)
		}
		return out("%s", strings.Join(names, ","))
	case "tcp":
		c, err := net.DialTimeout("tcp", args[1], 5*time.Second)
		if err != nil {
			return fail(4, err)
		}
		defer c.Close()
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return fail(4, err)
		}
		return out("%s", strings.TrimSpace(line))
	case "udp":
		c, err := net.Dial("udp", args[1])
		if err != nil {
			return fail(5, err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 2048)
		if _, err := c.Write([]byte("ping")); err != nil {
			return fail(5, err)
		}
		n, err := c.Read(buf)
		if err != nil {
			return fail(5, err)
		}
		return out("%s", buf[:n])
	case "bulk":
		size, _ := strconv.Atoi(args[2])
		return bulkProbe(args[1], size)
	case "serve":
		ln, err := net.Listen("tcp", "127.0.0.1:"+args[1])
		if err != nil {
			return fail(6, err)
		}
		fmt.Println("listening")
		c, err := ln.Accept()
		if err != nil {
			return fail(6, err)
		}
		fmt.Fprintf(c, "cmd-here uid=%d env=%s\n", os.Getuid(), os.Getenv("APP_ENV"))
		c.Close()
		return 0
	case "loop":
		return loopProbe(args[1], args[2])
	case "udpflood":
		n, _ := strconv.Atoi(args[2])
		return udpFloodProbe(args[1], n)
	case "bench": // clusternet_bench_test.go
		return benchProbe()
	case "exit":
		n, _ := strconv.Atoi(args[1])
		return n
	case "socks", "httpconnect":
		return proxyProbe(args[0], args[1])
	}
	return fail(2, fmt.Errorf("unknown probe %q", args[0]))
}

// proxyProbe connects to addr (host:port, a cluster name) through the
// proxy the fallback names in ALL_PROXY (socks) or HTTPS_PROXY
// (httpconnect), as a program honouring them would, and prints the
// server's first line. It never dials or resolves anything itself: without
// a loopback proxy in the variable it fails.
func proxyProbe(mode, addr string) int {
	variable := map[string]string{"socks": "ALL_PROXY", "httpconnect": "HTTPS_PROXY"}[mode]
	u, err := url.Parse(os.Getenv(variable))
	var host netip.Addr
	if err == nil {
		host, err = netip.ParseAddr(u.Hostname())
	}
	if err != nil || !host.IsLoopback() {
		fmt.Printf("error: %s=%q is not a proxy on loopback\n", variable, os.Getenv(variable))
		return 8
	}
	var c net.Conn
	if mode == "socks" {
		var d proxy.Dialer
		if d, err = proxy.FromURL(u, proxy.Direct); err == nil {
			c, err = d.Dial("tcp", addr)
		}
	} else {
		c, err = httpConnect(u, addr)
	}
	if err != nil {
		fmt.Println("error:", err)
		return 8
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		fmt.Println("error:", err)
		return 8
	}
	fmt.Println(strings.TrimSpace(line))
	return 0
}

// httpConnect opens a tunnel to addr with CONNECT through the proxy at u.
func httpConnect(u *url.URL, addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		return nil, err
	}
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: addr}, Host: addr, Header: http.Header{}}
	if u.User != nil {
		pw, _ := u.User.Password()
		req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pw)))
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	if err := req.Write(c); err != nil {
		c.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		c.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		c.Close()
		return nil, fmt.Errorf("CONNECT %s: %s: %s", addr, resp.Status, b)
	}
	if br.Buffered() > 0 {
		return &bufferedConn{Conn: c, r: br}, nil
	}
	return c, nil
}

type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// bulkProbe sends size random bytes to an echo server and checks that the
// same bytes come back (sha256 both ways).
func bulkProbe(addr string, size int) int {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		fmt.Println("error:", err)
		return 7
	}
	defer c.Close()
	sent, got := sha256.New(), sha256.New()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(io.MultiWriter(c, sent), io.LimitReader(rand.Reader, int64(size)))
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	n, err := io.Copy(got, c)
	wg.Wait()
	if err != nil || n != int64(size) {
		fmt.Printf("error: received %d of %d bytes: %v\n", n, size, err)
		return 7
	}
	if string(sent.Sum(nil)) != string(got.Sum(nil)) {
		fmt.Println("error: sha256 differs")
		return 7
	}
	fmt.Printf("sha256 equal, %d bytes\n", n)
	return 0
}

// clusterWorld is a pod (with the agent) and, in the other namespace, what
// the pod can reach: the cluster DNS and servers that say who called.
type clusterWorld struct {
	w        *nsworld.World
	tunnel   string // 127.0.0.1:PORT on the host: a stand-in for a port-forward
	binary   string // this test binary, where the unprivileged user can run it
	wsResolv string // the workstation's resolv.conf for the helper

	agent     *nsworld.Process
	agentArgs []string
}

// restartAgent kills the agent (as a crash or a restarted container
// would) and starts it again.
func (cw *clusterWorld) restartAgent(t *testing.T) {
	t.Helper()
	cw.agent.Kill()
	<-cw.agent.Done()
	cw.agent = runAgent(t, cw.w, cw.agentArgs...)
}

const (
	peerTCPPort  = 7000
	peerUDPPort  = 7001
	echoBulkPort = 7002
)

func startClusterWorld(t testing.TB, agentExtra ...string) *clusterWorld {
	t.Helper()
	requireWorld(t)
	w, err := nsworld.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	cw := &clusterWorld{w: w}
	startClusterDNS(t, w)
	servePeerTCP(t, w)
	servePeerUDP(t, w)
	serveEcho(t, w.Client, fmt.Sprintf("%s:%d", w.ClientIP, echoBulkPort))
	dir, err := os.MkdirTemp("", "detour-cw-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	_ = os.Chmod(dir, 0o755) // the unprivileged runner reads the workstation's resolv.conf here
	resolv := filepath.Join(dir, "pod-resolv.conf")
	writeFile(t, resolv, fmt.Sprintf("nameserver %s\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n", w.ClientIP))
	args := append([]string{"run", "--tunnel-addr", fmt.Sprintf("127.0.0.1:%d", tunnelPort),
		"--health-addr", fmt.Sprintf(":%d", healthPort), "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", metricsPort),
		"--listen", fmt.Sprintf("18080:%d", appHTTP), "--resolv-conf", resolv, "--cluster-cidrs", "10.251.0.0/16",
		"--pod-ip", w.PodIP.String()}, agentExtra...)
	cw.agent, cw.agentArgs = runAgent(t, w, args...), args
	cw.tunnel = forwardToPod(t, w)
	cw.binary = unprivilegedCopy(t)
	cw.wsResolv = filepath.Join(dir, "workstation-resolv.conf")
	writeFile(t, cw.wsResolv, "nameserver "+workstationDNS(t)+"\n")
	return cw
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// forwardToPod listens on the host's loopback and connects each client to
// the agent's tunnel port inside the pod, as the kubelet's port-forward does.
func forwardToPod(t testing.TB, w *nsworld.World) string {
	t.Helper()
	return forwardToPodPort(t, w, tunnelPort)
}

// unprivilegedCopy copies the test binary where nobody can run it.
func unprivilegedCopy(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "detour-rootless-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "netns.test")
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

// openTUN makes /dev/net/tun 0666 (as standard distributions ship it) for
// the test, restoring its mode afterwards.
func openTUN(t testing.TB, mode os.FileMode) {
	t.Helper()
	fi, err := os.Stat("/dev/net/tun")
	if err != nil {
		t.Skipf("no /dev/net/tun: %v", err)
	}
	old := fi.Mode().Perm()
	if err := os.Chmod("/dev/net/tun", mode); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod("/dev/net/tun", old) })
}

// runTimeout bounds one run (the 256 MiB transfer is the longest).
const runTimeout = 60 * time.Second

type runResult struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

// run runs `detour run`'s machinery as uid/gid nobody with probe as CMD.
type runOpts struct {
	alsoProxy string
	noUserNS  bool // the runner may create no user namespace (the proxy fallback)
}

func (cw *clusterWorld) run(t *testing.T, probe string) runResult {
	t.Helper()
	return cw.runWith(t, runOpts{}, probe)
}

func (cw *clusterWorld) runWith(t *testing.T, o runOpts, probe string) runResult {
	t.Helper()
	cmd := cw.command(probe)
	cmd.Env = append(cmd.Env, alsoProxyEnv+"="+o.alsoProxy)
	if o.noUserNS {
		// Root of a new user namespace (identity-mapped), which lowers its
		// own limit and then runs the runner as nobody.
		ids := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 65536}}
		cmd.Env = append(cmd.Env, noUserNSEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER, UidMappings: ids, GidMappings: ids, GidMappingsEnableSetgroups: true}
	}
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	// A hung run dumps its goroutines (SIGQUIT) into stderr, for the log.
	timer := time.AfterFunc(runTimeout, func() { _ = cmd.Process.Signal(syscall.SIGQUIT) })
	err := cmd.Run()
	if !timer.Stop() {
		t.Errorf("%q hung for %s; its stderr:\n%s", probe, runTimeout, errOut.String())
	}
	r := runResult{stdout: strings.TrimSpace(out.String()), stderr: errOut.String(), took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return r
}

func (cw *clusterWorld) command(probe string, expose ...string) *exec.Cmd {
	cmd := exec.Command(cw.binary, cw.binary)
	cmd.Env = []string{
		"PATH=/usr/bin:/bin", "HOME=/tmp",
		clusterRunEnv + "=" + cw.tunnel,
		exposeEnv + "=" + strings.Join(expose, ","),
		probeEnv + "=" + probe,
		"DETOUR_WORKSTATION_RESOLV_CONF=" + cw.wsResolv,
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	return cmd
}

// startClusterDNS serves the cluster's names from the other namespace: the
// pod's nameserver.
func startClusterDNS(t testing.TB, w *nsworld.World) {
	t.Helper()
	ip := w.ClientIP.String()
	records := map[string]string{
		"db.shop.svc.cluster.local.":            ip,
		"web-0.web.shop.svc.cluster.local.":     ip,
		"kubernetes.default.svc.cluster.local.": ip,
	}
	serveDNS(t, w.Client, ip+":53", records, map[string]string{reverse(ip): "db.shop.svc.cluster.local."})
}

// workstationDNS serves a name only the workstation knows, on loopback.
func workstationDNS(t testing.TB) string {
	t.Helper()
	serveDNS(t, "", "127.0.0.153:53", map[string]string{"public.example.test.": "192.0.2.77"}, nil)
	return "127.0.0.153"
}

func reverse(ip string) string {
	a, _ := dns.ReverseAddr(ip)
	return a
}

func serveDNS(t testing.TB, ns, addr string, a, ptr map[string]string) {
	t.Helper()
	var pc net.PacketConn
	listen := func() (err error) { pc, err = net.ListenPacket("udp", addr); return err }
	var err error
	if ns == "" {
		err = listen()
	} else {
		err = nsworld.In(ns, listen)
	}
	if err != nil {
		t.Fatal(err)
	}
	h := dns.HandlerFunc(func(rw dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		qn := strings.ToLower(q.Question[0].Name)
		switch {
		case q.Question[0].Qtype == dns.TypeA && a[qn] != "":
			r.Answer = append(r.Answer, &dns.A{Hdr: dns.RR_Header{Name: qn, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: net.ParseIP(a[qn])})
		case q.Question[0].Qtype == dns.TypePTR && ptr[qn] != "":
			r.Answer = append(r.Answer, &dns.PTR{Hdr: dns.RR_Header{Name: qn, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: 30}, Ptr: ptr[qn]})
		case a[qn] != "" || ptr[qn] != "":
			// the name exists, without records of that type
		default:
			r.Rcode = dns.RcodeNameError
		}
		_ = rw.WriteMsg(r)
	})
	srv := &dns.Server{PacketConn: pc, Handler: h}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
}

// servePeerTCP answers each connection with the caller's address.
func servePeerTCP(t testing.TB, w *nsworld.World) {
	t.Helper()
	ln := listen(t, w.Client, fmt.Sprintf("%s:%d", w.ClientIP, peerTCPPort))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ap := netip.MustParseAddrPort(c.RemoteAddr().String())
			fmt.Fprintf(c, "peer=%s\n", ap.Addr())
			c.Close()
		}
	}()
}

// servePeerUDP answers each datagram with the sender's address.
func servePeerUDP(t testing.TB, w *nsworld.World) {
	t.Helper()
	var pc net.PacketConn
	err := nsworld.In(w.Client, func() (err error) {
		pc, err = net.ListenPacket("udp", fmt.Sprintf("%s:%d", w.ClientIP, peerUDPPort))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			ap := netip.MustParseAddrPort(from.String())
			_, _ = pc.WriteTo([]byte("peer="+ap.Addr().String()), from)
		}
	}()
}

// serveEcho echoes every connection, half-closing after the client does.
func serveEcho(t testing.TB, ns, addr string) {
	t.Helper()
	ln := listen(t, ns, addr)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
}

// loopProbe opens a new connection to addr every 100 ms for the duration
// given and prints one word per try: ok@MS or fail@MS, MS since the start. A try is bounded (2 s),
// so a hang shows as a fail, not a stuck probe.
func loopProbe(addr, duration string) int {
	d, _ := time.ParseDuration(duration)
	end := time.Now().Add(d)
	var words []string
	start := time.Now()
	for time.Now().Before(end) {
		at := time.Since(start).Milliseconds()
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		word := "fail"
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			if line, err := bufio.NewReader(c).ReadString('\n'); err == nil && strings.HasPrefix(line, "peer=") {
				word = "ok"
			}
			c.Close()
		}
		words = append(words, fmt.Sprintf("%s@%d", word, at))
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Println(strings.Join(words, " "))
	return 0
}

// udpFloodProbe sends n datagrams of 1 KiB to addr as fast as it can,
// then makes one ordinary exchange and prints its answer: the queues on
// the way are bounded (drops, not memory), and the path still works.
func udpFloodProbe(addr string, n int) int {
	c, err := net.Dial("udp", addr)
	if err != nil {
		fmt.Println("error:", err)
		return 5
	}
	payload := make([]byte, 1024)
	for range n {
		_, _ = c.Write(payload) // a full queue drops: the point of the test
	}
	c.Close()
	return probeMain2("udp " + addr)
}

// probeMain2 runs one more probe in the same process.
func probeMain2(probe string) int {
	os.Setenv(probeEnv, probe)
	return probeMain()
}
