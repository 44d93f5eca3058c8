package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// MutatePath is where the API server sends pod reviews (the
// MutatingWebhookConfiguration's clientConfig.service.path).
const MutatePath = "/mutate-pods"

// CertSource hands TLS handshakes their certificate.
type CertSource interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// Server serves admission reviews over TLS, and /healthz, /readyz and
// /metrics in plain HTTP on a separate port (the kubelet and Prometheus need
// no certificate, and liveness does not depend on one).
type Server struct {
	Log     *zap.Logger
	Handler Handler
	Certs   CertSource
	Metrics *Metrics
	// Ready reports readiness beyond "not shutting down": a certificate
	// loaded, caches synced.
	Ready func() bool
	// ShutdownTimeout bounds how long in-flight reviews may finish.
	ShutdownTimeout time.Duration

	shuttingDown atomic.Bool
}

// Run listens on addr (webhook, TLS) and opsAddr (probes, metrics) and
// serves until ctx ends; see Serve.
func (s *Server) Run(ctx context.Context, addr, opsAddr string) error {
	wl, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	ol, err := net.Listen("tcp", opsAddr)
	if err != nil {
		wl.Close()
		return fmt.Errorf("listen %s: %w", opsAddr, err)
	}
	return s.Serve(ctx, wl, ol)
}

// Serve serves on the given listeners until ctx ends, then stops reporting
// ready, and shuts both servers down within ShutdownTimeout. It returns nil
// after a clean shutdown.
func (s *Server) Serve(ctx context.Context, webhookLn, opsLn net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle(MutatePath, NewHTTPHandler(s.Log.Named("admission"), s.Metrics, s.Handler))
	webhookSrv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second, // the API server gives up after timeoutSeconds (5) anyway
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          zap.NewStdLog(s.Log.Named("http")),
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: s.Certs.GetCertificate,
		},
	}
	ops := http.NewServeMux()
	ops.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	ops.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if s.shuttingDown.Load() || (s.Ready != nil && !s.Ready()) {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	ops.Handle("/metrics", promhttp.HandlerFor(s.Metrics.Registry, promhttp.HandlerOpts{Registry: s.Metrics.Registry}))
	opsSrv := &http.Server{Handler: ops, ReadHeaderTimeout: 5 * time.Second, ErrorLog: zap.NewStdLog(s.Log.Named("ops"))}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := webhookSrv.ServeTLS(webhookLn, "", ""); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("webhook server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := opsSrv.Serve(opsLn); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("ops server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		s.shuttingDown.Store(true)
		timeout := s.ShutdownTimeout
		if timeout == 0 {
			timeout = 10 * time.Second
		}
		sctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		s.Log.Info("shutting down", zap.Duration("timeout", timeout))
		return errors.Join(webhookSrv.Shutdown(sctx), opsSrv.Shutdown(sctx))
	})
	s.Log.Info("serving", zap.Stringer("webhook", webhookLn.Addr()), zap.Stringer("ops", opsLn.Addr()))
	return g.Wait()
}
