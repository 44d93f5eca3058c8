// Command echo is detour's e2e test server. Over HTTP (default :8080) it
// answers every request with its pod name in the X-Echo-Pod header; a GET
// gets "hello from POD\n", any other method gets its request body back.
// On a raw TCP port (default :9000) it echoes bytes until the peer half-closes;
// on UDP (default :9001) it answers each datagram with "pod=POD peer=IP".
//
// Environment: POD_NAME (else the hostname), HTTP_ADDR, TCP_ADDR, and
// STORE_URL: an etcd client URL (http://store:2379, as the demo sets it);
// with it, a GET's answer adds what the store holds under STORE_KEY
// (default "greeting"): "hello from POD; store says: VALUE\n", read through
// etcd's HTTP/JSON gateway on every request (store.go).
//
// Client mode, for tests that need a request made from inside a pod:
//
//	echo post URL BODY
//
// POSTs BODY to URL (retrying for up to 30 s) and prints
// "pod=<X-Echo-Pod> body=<response>"; the exit code says whether it worked.
//
//	echo get URL
//
// GETs URL once and prints "pod=<X-Echo-Pod> peer=<X-Echo-Peer>": who
// answered, and the address the server saw the request come from.
//
//	echo udp ADDR
//
// sends a datagram to ADDR and prints the answer (the UDP port's
// "pod=POD peer=IP").
//
//	echo bulk ADDR SIZE
//
// sends SIZE bytes to a TCP echo port and reads them back, printing
// "sha256 equal SIZE" when both directions match.
//
//	echo put URL KEY VALUE
//
// puts KEY=VALUE into the etcd at URL (retrying for up to 60 s while it
// starts) and prints "put KEY"; the demo's one-shot pod runs it.
//
// DNS mode, for the cluster DNS tests:
//
//	echo dns NAME...
//
// resolves each NAME as an application in the pod does (Go's resolver with
// the pod's /etc/resolv.conf: the kubelet's nameserver, search path and
// ndots), an IP address by PTR, and prints one tab-separated line per name,
// "dns NAME TOOK RESULT": TOOK the lookup's duration ("12ms"), RESULT the
// sorted addresses or names joined by commas, or "notfound RCODE" with the
// response code the nameserver gives for the absolute name (NXDOMAIN, ...),
// or "error MESSAGE".
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/detour-dev/detour/tests/internal/dnsquery"
)

func main() {
	if len(os.Args) > 2 && os.Args[1] == "dns" {
		if err := lookups(os.Args[2:]); err != nil {
			log.Fatal(err)
		}
		return
	}
	if len(os.Args) == 3 && os.Args[1] == "get" {
		if err := get(os.Args[2]); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) == 5 && os.Args[1] == "put" {
		if err := putRetrying(os.Args[2], os.Args[3], os.Args[4], time.Minute); err != nil {
			log.Fatal(err)
		}
		fmt.Println("put", os.Args[3])
		return
	}
	if len(os.Args) == 3 && os.Args[1] == "udp" {
		if err := udpProbe(os.Args[2]); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) == 4 && os.Args[1] == "bulk" {
		if err := bulkProbe(os.Args[2], os.Args[3]); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) == 4 && os.Args[1] == "post" {
		if err := post(os.Args[2], os.Args[3]); err != nil {
			log.Fatal(err)
		}
		return
	}
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

// get is the client mode that says who answered and whom it saw:
// "pod=<X-Echo-Pod> peer=<X-Echo-Peer>", one try, 5 s.
func get(url string) error {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	fmt.Printf("pod=%s peer=%s\n", resp.Header.Get("X-Echo-Pod"), resp.Header.Get("X-Echo-Peer"))
	return nil
}

// post is the client mode.
func post(url, body string) error {
	c := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := c.Post(url, "text/plain", strings.NewReader(body))
		if err == nil {
			b, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == http.StatusOK {
				fmt.Printf("pod=%s body=%s\n", resp.Header.Get("X-Echo-Pod"), b)
				return nil
			}
			err = fmt.Errorf("status %s, read %v", resp.Status, rerr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("post %s: %w", url, err)
		}
		log.Printf("post %s: %v (retrying)", url, err)
		time.Sleep(500 * time.Millisecond)
	}
}

// lookups is the DNS mode.
func lookups(names []string) error {
	server, network, err := nameserver("/etc/resolv.conf")
	if err != nil {
		return err
	}
	r := &net.Resolver{PreferGo: true}
	for _, n := range names {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		start := time.Now()
		res, notFound := resolve(ctx, r, n)
		took := time.Since(start)
		if notFound {
			res = "notfound " + rcode(ctx, network, server, n)
		}
		cancel()
		fmt.Printf("dns\t%s\t%dms\t%s\n", n, took.Milliseconds(), res)
	}
	return nil
}

// resolve looks a name (or, for an IP address, its PTR) up with r.
func resolve(ctx context.Context, r *net.Resolver, name string) (result string, notFound bool) {
	var out []string
	var err error
	if net.ParseIP(name) != nil {
		out, err = r.LookupAddr(ctx, name)
	} else {
		out, err = r.LookupHost(ctx, name)
	}
	var de *net.DNSError
	switch {
	case errors.As(err, &de) && de.IsNotFound:
		return "", true
	case err != nil:
		return "error " + err.Error(), false
	}
	slices.Sort(out)
	return strings.Join(out, ","), false
}

// rcode asks server directly for the absolute name (A, or PTR for an IP
// address) over network and returns the response code.
func rcode(ctx context.Context, network, server, name string) string {
	qname, qtype := name, dnsmessage.TypeA
	if net.ParseIP(name) != nil {
		rev, err := dnsquery.ReverseName(name)
		if err != nil {
			return "error " + err.Error()
		}
		qname, qtype = rev, dnsmessage.TypePTR
	}
	res, err := dnsquery.Query(ctx, network, server, qname, qtype)
	if err != nil {
		return "error " + err.Error()
	}
	return res.RCodeName()
}

// nameserver reads a resolv.conf: its first nameserver, as host:53, and
// the transport its options ask for ("tcp" with use-vc, else "udp").
func nameserver(path string) (server, network string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("read resolver config: %w", err)
	}
	network = "udp"
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "nameserver" && server == "":
			server = net.JoinHostPort(f[1], "53")
		case len(f) >= 2 && f[0] == "options" && slices.Contains(f[1:], "use-vc"):
			network = "tcp"
		}
	}
	if server == "" {
		return "", "", fmt.Errorf("no nameserver in %s", path)
	}
	return server, network, nil
}

func run() error {
	pod := os.Getenv("POD_NAME")
	if pod == "" {
		pod, _ = os.Hostname()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	tl, err := net.Listen("tcp", envOr("TCP_ADDR", ":9000"))
	if err != nil {
		return fmt.Errorf("listen tcp: %w", err)
	}
	go serveTCP(tl)
	ul, err := net.ListenPacket("udp", envOr("UDP_ADDR", ":9001"))
	if err != nil {
		return fmt.Errorf("listen udp: %w", err)
	}
	defer ul.Close()
	go serveUDP(ul, pod)

	srv := &http.Server{
		Addr:              envOr("HTTP_ADDR", ":8080"),
		Handler:           handler(pod, newStore(os.Getenv("STORE_URL"), envOr("STORE_KEY", "greeting"))),
		ReadHeaderTimeout: 10 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Printf("echo: pod %s, http %s, tcp %s", pod, srv.Addr, tl.Addr())
	select {
	case err := <-errc:
		return fmt.Errorf("serve http: %w", err)
	case <-ctx.Done():
	}
	_ = tl.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

func handler(pod string, st *store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Echo-Pod", pod)
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			w.Header().Set("X-Echo-Peer", ap.Addr().Unmap().String()) // who called: the e2e tests check where a connection left from
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			if st == nil {
				fmt.Fprintf(w, "hello from %s\n", pod)
				return
			}
			fmt.Fprintf(w, "hello from %s; store says: %s\n", pod, st.says(r.Context()))
			return
		}
		// Bounded: this is a test server, 16 MiB is more than any test sends.
		if _, err := io.Copy(w, io.LimitReader(r.Body, 16<<20)); err != nil {
			log.Printf("echo body: %v", err)
		}
	})
}

func serveTCP(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				log.Printf("accept: %v", err)
			}
			return
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
		}()
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
