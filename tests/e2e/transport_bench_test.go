//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// keepAliveRate runs conns keep-alive HTTP/1.1 clients against url for d
// and returns completed requests per second (every response read whole
// and checked for status 200).
func keepAliveRate(tb testing.TB, url string, conns int, d time.Duration) float64 {
	tb.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	var done, failed atomic.Int64
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				resp, err := c.Get(url)
				if err != nil {
					failed.Add(1)
					continue
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					failed.Add(1)
					continue
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		tb.Errorf("%s: %d requests failed", url, n)
	}
	return float64(done.Load()) / d.Seconds()
}

// BenchmarkPortForwardTransport compares the two ways client-go opens a
// port-forward to the same pod — plain SPDY and SPDY over WebSocket
// (kubectl's default since 1.31, detour's until this benchmark) — in the
// same run, interleaved: keep-alive HTTP requests (8 connections) and an
// echo bulk transfer. It decides which transport DialPod tries first.
// Run: make bench (or go test -tags e2e -run '^$' -bench PortForwardTransport -benchtime 1x ./tests/e2e/).
func BenchmarkPortForwardTransport(b *testing.B) {
	ctx := context.Background()
	cfg := restConfig(b)
	cs := clientset(b, cfg)
	ns := createNamespace(ctx, b, cs, "pft")
	deployWeb(ctx, b, cs, ns, "web", 1)
	var pod *corev1.Pod
	eventually(b, 2*time.Minute, "web pod ready", func() bool {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return false
		}
		for i := range pods.Items {
			if p := &pods.Items[i]; p.DeletionTimestamp == nil && podReady(p) {
				pod = p
				return true
			}
		}
		return false
	})
	spdy := portForwardVia(ctx, b, cfg, cs, pod, false, echoHTTPPort, echoTCPPort)
	ws := portForwardVia(ctx, b, cfg, cs, pod, true, echoHTTPPort, echoTCPPort)
	url := func(p uint16) string { return fmt.Sprintf("http://127.0.0.1:%d/", p) }
	echo := func(p uint16) string { return net.JoinHostPort("127.0.0.1", fmt.Sprint(p)) }
	keepAliveRate(b, url(spdy[0]), 8, time.Second) // warm both
	keepAliveRate(b, url(ws[0]), 8, time.Second)
	const rounds, size = 4, 32 << 20
	var spdyRate, wsRate float64
	var spdyBulk, wsBulk time.Duration
	for i := 0; i < rounds; i++ {
		spdyRate += keepAliveRate(b, url(spdy[0]), 8, 3*time.Second)
		wsRate += keepAliveRate(b, url(ws[0]), 8, 3*time.Second)
		spdyBulk += echoBulk(b, echo(spdy[1]), size)
		wsBulk += echoBulk(b, echo(ws[1]), size)
	}
	for i := 0; i < b.N; i++ {
	}
	mb := float64(rounds*2*size) / 1e6
	b.ReportMetric(spdyRate/rounds, "spdy-keepalive-req/s")
	b.ReportMetric(wsRate/rounds, "websocket-keepalive-req/s")
	b.ReportMetric(wsRate/spdyRate, "websocket/spdy-req-ratio")
	b.ReportMetric(mb/spdyBulk.Seconds(), "spdy-echo-MB/s")
	b.ReportMetric(mb/wsBulk.Seconds(), "websocket-echo-MB/s")
	b.ReportMetric(spdyBulk.Seconds()/wsBulk.Seconds(), "websocket/spdy-bulk-ratio")
}
