package httpecho

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/detour-dev/detour/tests/internal/grpcecho"
	"github.com/detour-dev/detour/tests/internal/wsecho"
)

// WebSocketPath is where ServeAll serves the WebSocket echo.
const WebSocketPath = "/ws"

// shutdownWait bounds the graceful part of ServeAll's shutdown; connections
// still open after it are closed.
const shutdownWait = 5 * time.Second

// ServeAll serves on ln until ctx ends, answering as tag:
//
//   - requests with a Content-Type starting "application/grpc" go to a
//     grpcecho server (which needs HTTP/2: over HTTP/1.1 they get 505);
//   - WebSocketPath goes to a wsecho handler (HTTP/1.1 Upgrade);
//   - everything else goes to Handler.
//
// With tlsCfg nil it speaks HTTP/1.1 and cleartext HTTP/2 with prior
// knowledge (h2c; there is no support for the HTTP/1.1 Upgrade to h2c). With
// tlsCfg it serves TLS and negotiates "h2" or "http/1.1" by ALPN; tlsCfg
// needs a certificate (see SelfSignedTLS) and is not modified.
//
// When ctx ends, ServeAll ends gRPC streams and WebSocket connections and
// cancels the requests' contexts, shuts the server down (waiting up to 5s
// for requests in flight, then closing), and returns nil. It closes ln. It
// returns the server's error if serving fails first.
func ServeAll(ctx context.Context, ln net.Listener, tag string, tlsCfg *tls.Config) error {
	return serve(ctx, ln, tag, tlsCfg, true)
}

// ServeHTTP1 is ServeAll in clear text and HTTP/1.1 only (no h2c): an app
// an HTTP/1.1 proxy reaches in HTTP/1.1. gRPC requests, which need HTTP/2,
// cannot reach it.
func ServeHTTP1(ctx context.Context, ln net.Listener, tag string) error {
	return serve(ctx, ln, tag, nil, false)
}

func serve(ctx context.Context, ln net.Listener, tag string, tlsCfg *tls.Config, h2 bool) error {
	gs := grpcecho.NewServer(tag)
	ws := wsecho.NewHandler(tag)
	plain := Handler(tag)

	var protos http.Protocols
	protos.SetHTTP1(true)
	switch {
	case !h2:
	case tlsCfg != nil:
		protos.SetHTTP2(true)
	default:
		protos.SetUnencryptedHTTP2(true)
	}
	baseCtx, stopRequests := context.WithCancel(context.Background())
	defer stopRequests()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc"):
				gs.ServeHTTP(w, r)
			case r.URL.Path == WebSocketPath:
				ws.ServeHTTP(w, r)
			default:
				plain.ServeHTTP(w, r)
			}
		}),
		Protocols:         &protos,
		TLSConfig:         tlsCfg.Clone(), // the HTTP/2 setup edits it in place
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
	}

	errc := make(chan error, 1)
	go func() {
		if tlsCfg != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()

	var serveErr error
	served := false
	select {
	case serveErr = <-errc:
		served = true
	case <-ctx.Done():
	}

	// Long-lived exchanges first: Shutdown would wait on gRPC streams, and
	// it does not track hijacked WebSocket connections at all.
	stopRequests()
	gs.Stop()
	ws.Close()
	shCtx, cancel := context.WithTimeout(context.Background(), shutdownWait)
	defer cancel()
	if err := srv.Shutdown(shCtx); err != nil {
		_ = srv.Close()
	}
	if !served {
		serveErr = <-errc
	}
	if errors.Is(serveErr, http.ErrServerClosed) {
		return nil
	}
	return serveErr
}
