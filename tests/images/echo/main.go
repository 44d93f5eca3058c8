// Command echo is detour's e2e test server. Over HTTP (default :8080) it
// answers every request with its pod name in the X-Echo-Pod header; a GET
// gets "hello from POD\n", any other method gets its request body back.
// On a raw TCP port (default :9000) it echoes bytes until the peer half-closes.
//
// Environment: POD_NAME (else the hostname), HTTP_ADDR, TCP_ADDR.
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
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
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
