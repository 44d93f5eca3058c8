package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"
)

// TestServer runs the real server on loopback: TLS ≥ 1.2 with the managed
// certificate, a review admitted and patched, probes and metrics, a rotated
// certificate picked up by the next handshake without restart, and a clean
// shutdown when the context ends.
func TestServer(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	cs := fake.NewClientset(webhookConfig())
	metrics := NewMetrics()
	certs := NewCertManager(zaptest.NewLogger(t), cs, testCertConfig(clk), metrics)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := certs.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	raw, inj := goldenPodRequest(t, "named-target-port")
	srv := &Server{Log: zaptest.NewLogger(t), Handler: inj, Certs: certs, Metrics: metrics, Ready: certs.Ready, ShutdownTimeout: 2 * time.Second}
	wl, _ := net.Listen("tcp", "127.0.0.1:0")
	ol, _ := net.Listen("tcp", "127.0.0.1:0")
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, wl, ol) }()

	caBundle := func() *x509.CertPool {
		mwc, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "detour-webhook", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(mwc.Webhooks[0].ClientConfig.CABundle)
		return pool
	}
	client := func(maxVersion uint16) *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: caBundle(), ServerName: "detour-webhook.detour-system.svc", MaxVersion: maxVersion, Time: clk.Now,
		}}}
	}
	url := "https://" + wl.Addr().String() + MutatePath
	admit := func(c *http.Client) (*admissionv1.AdmissionResponse, *x509.Certificate) {
		t.Helper()
		resp, err := c.Post(url, "application/json", bytes.NewReader(reviewJSON(t, podRequest(raw))))
		if err != nil {
			t.Fatalf("POST %s: %v", url, err)
		}
		defer resp.Body.Close()
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(resp.Body).Decode(&review); err != nil || review.Response == nil {
			t.Fatalf("decode: %v", err)
		}
		return review.Response, resp.TLS.PeerCertificates[0]
	}

	r, first := admit(client(0))
	if !r.Allowed || r.Patch == nil || r.UID != testUID {
		t.Fatalf("response %+v", r)
	}
	if _, err := client(tls.VersionTLS11).Post(url, "application/json", strings.NewReader("{}")); err == nil {
		t.Error("TLS 1.1 handshake succeeded; want TLS ≥ 1.2 only")
	}

	ops := "http://" + ol.Addr().String()
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ok", "/metrics": `detour_webhook_admissions_total{outcome="patched"} 1`} {
		resp, err := http.Get(ops + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d, body lacks %q", path, resp.StatusCode, want)
		}
	}

	// Rotate: the next handshake gets the new certificate.
	clk.Step(45 * time.Minute)
	if err := certs.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	_, second := admit(client(0))
	if second.Equal(first) {
		t.Error("handshake after rotation still got the old certificate")
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve returned %v after cancel; want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}
