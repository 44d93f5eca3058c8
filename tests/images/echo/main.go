// Command echo is detour's e2e test server. Over HTTP (default :8080) it
// answers every request with its pod name in the X-Echo-Pod header; a GET
// gets "hello from POD\n", any other method gets its request body back.
// On a raw TCP port (default :9000) it echoes bytes until the peer half-closes.
//
// Environment: POD_NAME (else the hostname), HTTP_ADDR, TCP_ADDR.
//
// Client mode, for tests that need a request made from inside a pod:
//
//	echo post URL BODY
//
// POSTs BODY to URL (retrying for up to 30 s) and prints
// "pod=<X-Echo-Pod> body=<response>"; the exit code says whether it worked.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
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

	srv := &http.Server{
		Addr:              envOr("HTTP_ADDR", ":8080"),
		Handler:           handler(pod),
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

func handler(pod string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Echo-Pod", pod)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			fmt.Fprintf(w, "hello from %s\n", pod)
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
