package webhook

import (
	"context"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"
)

func webhookConfig() *admissionregistrationv1.MutatingWebhookConfiguration {
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "detour-webhook"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "inject.detour.dev",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				Service: &admissionregistrationv1.ServiceReference{Namespace: "detour-system", Name: "detour-webhook"},
			},
		}},
	}
}

func testCertConfig(clk *clocktesting.FakeClock) CertConfig {
	cfg := DefaultCertConfig()
	cfg.CertValidity, cfg.CAValidity, cfg.Clock = time.Hour, 3*time.Hour, clk
	return cfg
}

// assertServedCertTrusted checks what the API server would: the certificate
// a handshake gets now verifies against the caBundle for the Service name.
func assertServedCertTrusted(t *testing.T, cs *fake.Clientset, m *CertManager, now time.Time) *x509.Certificate {
	t.Helper()
	mwc, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), "detour-webhook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(mwc.Webhooks[0].ClientConfig.CABundle) {
		t.Fatalf("at %s: caBundle holds no certificate", now)
	}
	tc, err := m.GetCertificate(nil)
	if err != nil {
		t.Fatalf("at %s: %v", now, err)
	}
	leaf, err := x509.ParseCertificate(tc.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "detour-webhook.detour-system.svc", CurrentTime: now}); err != nil {
		t.Fatalf("at %s: served certificate not trusted by caBundle: %v", now, err)
	}
	return leaf
}

func TestCertManagerCreatesSecretAndCABundle(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	cs := fake.NewClientset(webhookConfig())
	m := NewCertManager(zaptest.NewLogger(t), cs, testCertConfig(clk), NewMetrics())
	if m.Ready() {
		t.Fatal("ready before the first reconcile")
	}
	if _, err := m.GetCertificate(nil); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("GetCertificate before load: %v", err)
	}
	ctx := context.Background()
	if err := m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := cs.CoreV1().Secrets("detour-system").Get(ctx, "detour-webhook-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Type != corev1.SecretTypeTLS || len(s.Data["ca.key"]) == 0 {
		t.Errorf("secret type %s, keys %v", s.Type, keys(s.Data))
	}
	leaf := assertServedCertTrusted(t, cs, m, clk.Now())
	if !m.Ready() || len(leaf.DNSNames) != 4 {
		t.Errorf("ready=%v names=%v", m.Ready(), leaf.DNSNames)
	}

	// A second pass with nothing due writes nothing.
	cs.ClearActions()
	if err := m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	for _, a := range cs.Actions() {
		if a.GetVerb() != "get" {
			t.Errorf("idle reconcile did %s %s", a.GetVerb(), a.GetResource().Resource)
		}
	}
}

// TestCertRotation walks a fake clock through several lifetimes of a
// one-hour serving certificate and a three-hour CA, reconciling every ten
// minutes like the webhook does: the served certificate is always trusted by
// the caBundle, the serving certificate and the CA both rotate.
func TestCertRotation(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakeClock(start)
	cs := fake.NewClientset(webhookConfig())
	m := NewCertManager(zaptest.NewLogger(t), cs, testCertConfig(clk), nil)
	ctx := context.Background()
	servings, cas := map[string]bool{}, map[string]bool{}
	for clk.Now().Before(start.Add(10 * time.Hour)) {
		if err := m.Reconcile(ctx); err != nil {
			t.Fatalf("at %s: %v", clk.Now(), err)
		}
		leaf := assertServedCertTrusted(t, cs, m, clk.Now())
		servings[leaf.SerialNumber.String()] = true
		cas[leaf.Issuer.CommonName] = true
		clk.Step(10 * time.Minute)
	}
	// 10 h of 1 h certificates renewed at 40 min: about 15; CAs renewed at 2 h.
	if len(servings) < 10 || len(cas) < 4 {
		t.Errorf("saw %d serving certificates and %d CAs; want rotation of both", len(servings), len(cas))
	}
	mwc, _ := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "detour-webhook", metav1.GetOptions{})
	if n := len(mustParseCerts(t, mwc.Webhooks[0].ClientConfig.CABundle)); n > 2 {
		t.Errorf("caBundle holds %d CAs; want at most the current one and its predecessor", n)
	}
}

// TestCertManagerReplicasAgree: two replicas starting together end up
// serving the same certificate (the loser of the create uses the winner's).
func TestCertManagerReplicasAgree(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	cs := fake.NewClientset(webhookConfig())
	a := NewCertManager(zaptest.NewLogger(t), cs, testCertConfig(clk), nil)
	b := NewCertManager(zaptest.NewLogger(t), cs, testCertConfig(clk), nil)
	ctx := context.Background()
	errs := make(chan error, 2)
	go func() { errs <- a.Reconcile(ctx) }()
	go func() { errs <- b.Reconcile(ctx) }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	ca := assertServedCertTrusted(t, cs, a, clk.Now())
	cb := assertServedCertTrusted(t, cs, b, clk.Now())
	if !ca.Equal(cb) {
		t.Errorf("replicas serve different certificates")
	}
}

func TestCertManagerReplacesBrokenSecret(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	broken := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "detour-webhook-tls", Namespace: "detour-system"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"tls.crt": []byte("junk")},
	}
	cs := fake.NewClientset(webhookConfig(), broken)
	m := NewCertManager(zaptest.NewLogger(t), cs, testCertConfig(clk), nil)
	if err := m.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertServedCertTrusted(t, cs, m, clk.Now())
}

// TestCertManagerExternalSecret: with SelfManaged off (cert-manager) the
// Secret is read as it is and nothing is written.
func TestCertManagerExternalSecret(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	issuer := NewCertManager(zaptest.NewLogger(t), fake.NewClientset(), testCertConfig(clk), nil)
	b, err := issuer.freshBundle()
	if err != nil {
		t.Fatal(err)
	}
	data := b.data()
	delete(data, "ca.key")
	cs := fake.NewClientset(webhookConfig())
	cfg := testCertConfig(clk)
	cfg.SelfManaged = false
	m := NewCertManager(zaptest.NewLogger(t), cs, cfg, nil)
	ctx := context.Background()
	if err := m.Reconcile(ctx); err == nil {
		t.Fatal("reconcile without the secret succeeded; want an error naming it")
	}
	if _, err := cs.CoreV1().Secrets("detour-system").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "detour-webhook-tls", Namespace: "detour-system"},
		Type:       corev1.SecretTypeTLS, Data: data,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cs.ClearActions()
	if err := m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	for _, a := range cs.Actions() {
		if a.GetVerb() != "get" {
			t.Errorf("external mode did %s %s", a.GetVerb(), a.GetResource().Resource)
		}
	}
	tc, _ := m.GetCertificate(nil)
	if leaf, _ := x509.ParseCertificate(tc.Certificate[0]); !leaf.Equal(b.serving) {
		t.Error("loaded certificate is not the secret's")
	}
}

func mustParseCerts(t *testing.T, pemData []byte) []*x509.Certificate {
	t.Helper()
	c, err := parseCerts(pemData)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
