package webhook

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"slices"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
)

// Keys of the certificate Secret. tls.crt, tls.key and ca.crt are what
// cert-manager writes too; ca.key exists only in a self-managed Secret.
const (
	secretCACert = "ca.crt"
	secretCAKey  = "ca.key"
)

// CertConfig says where the certificate lives and how long it lasts.
type CertConfig struct {
	// Namespace, SecretName: the Secret holding the serving certificate.
	Namespace  string
	SecretName string
	// ServiceName: the webhook's Service; the certificate's DNS names are
	// derived from it.
	ServiceName string
	// WebhookConfigName: the MutatingWebhookConfiguration whose caBundle is
	// kept equal to the Secret's ca.crt (self-managed only).
	WebhookConfigName string
	// SelfManaged: create, rotate and trust the certificate ourselves. When
	// false the Secret is read as it is (e.g. cert-manager's, whose
	// cainjector fills caBundle).
	SelfManaged bool
	// CAValidity and CertValidity: lifetimes. Each is renewed once less than
	// a third of its lifetime is left.
	CAValidity   time.Duration
	CertValidity time.Duration
	// Clock is time; tests pass a fake one.
	Clock clock.PassiveClock
}

// DefaultCertConfig is the configuration of the deploy/ manifests.
func DefaultCertConfig() CertConfig {
	return CertConfig{
		Namespace:         "detour-system",
		SecretName:        "detour-webhook-tls",
		ServiceName:       "detour-webhook",
		WebhookConfigName: "detour-webhook",
		SelfManaged:       true,
		CAValidity:        10 * 365 * 24 * time.Hour,
		CertValidity:      365 * 24 * time.Hour,
		Clock:             clock.RealClock{},
	}
}

// DNSNames are the names the serving certificate must cover.
func (c CertConfig) DNSNames() []string {
	svc, ns := c.ServiceName, c.Namespace
	return []string{svc, svc + "." + ns, svc + "." + ns + ".svc", svc + "." + ns + ".svc.cluster.local"}
}

// CertManager keeps the serving certificate: it reconciles the Secret (and,
// self-managed, the caBundle) and hands the current certificate to every TLS
// handshake, so a rotation needs no restart.
type CertManager struct {
	log     *zap.Logger
	client  kubernetes.Interface
	cfg     CertConfig
	metrics *Metrics

	current atomic.Pointer[loadedCert]
}

type loadedCert struct {
	cert     *tls.Certificate
	pem      []byte // tls.crt, to notice changes
	notAfter time.Time
}

// NewCertManager returns a CertManager; Reconcile or Run loads the
// certificate.
func NewCertManager(log *zap.Logger, client kubernetes.Interface, cfg CertConfig, metrics *Metrics) *CertManager {
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	return &CertManager{log: log, client: client, cfg: cfg, metrics: metrics}
}

// GetCertificate is tls.Config.GetCertificate: the certificate loaded last,
// looked up again on every handshake.
func (m *CertManager) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := m.current.Load()
	if c == nil {
		return nil, ErrNoCertificate
	}
	return c.cert, nil
}

// Ready reports whether a certificate is loaded.
func (m *CertManager) Ready() bool { return m.current.Load() != nil }

// Run reconciles now and then every interval until ctx ends. A failed pass
// is logged and retried on the next tick; Run returns nil when ctx ends.
func (m *CertManager) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := m.Reconcile(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("certificate reconcile failed; retrying", zap.Duration("in", interval), zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Reconcile makes one pass: read (or create) the Secret, rotate what is
// due, keep the caBundle in step, and load the serving certificate.
func (m *CertManager) Reconcile(ctx context.Context) error {
	secret, err := m.client.CoreV1().Secrets(m.cfg.Namespace).Get(ctx, m.cfg.SecretName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err) && m.cfg.SelfManaged:
		if secret, err = m.createSecret(ctx); err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("get secret %s/%s: %w", m.cfg.Namespace, m.cfg.SecretName, err)
	}
	if m.cfg.SelfManaged {
		if secret, err = m.rotate(ctx, secret); err != nil {
			return err
		}
		if err := m.patchCABundle(ctx, secret.Data[secretCACert]); err != nil {
			return err
		}
	}
	return m.load(secret)
}

func (m *CertManager) createSecret(ctx context.Context) (*corev1.Secret, error) {
	b, err := m.freshBundle()
	if err != nil {
		return nil, err
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: m.cfg.SecretName, Namespace: m.cfg.Namespace,
			Labels: map[string]string{"app.kubernetes.io/name": "detour-webhook", "app.kubernetes.io/managed-by": "detour-webhook"},
		},
		Type: corev1.SecretTypeTLS,
		Data: b.data(),
	}
	created, err := m.client.CoreV1().Secrets(m.cfg.Namespace).Create(ctx, s, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) { // another replica was first: use its
		return m.client.CoreV1().Secrets(m.cfg.Namespace).Get(ctx, m.cfg.SecretName, metav1.GetOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("create secret %s/%s: %w", m.cfg.Namespace, m.cfg.SecretName, err)
	}
	m.log.Info("created CA and serving certificate", zap.String("secret", m.cfg.SecretName), zap.Time("notAfter", b.serving.NotAfter))
	return created, nil
}

// bundle is the parsed content of a self-managed Secret.
type bundle struct {
	cas        []*x509.Certificate // trusted CAs, newest first; cas[0] signs
	caKey      *ecdsa.PrivateKey
	serving    *x509.Certificate
	servingKey *ecdsa.PrivateKey
}

func (b *bundle) data() map[string][]byte {
	var caPEM bytes.Buffer
	for _, c := range b.cas {
		_ = pem.Encode(&caPEM, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return map[string][]byte{
		secretCACert:            caPEM.Bytes(),
		secretCAKey:             keyPEM(b.caKey),
		corev1.TLSCertKey:       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.serving.Raw}),
		corev1.TLSPrivateKeyKey: keyPEM(b.servingKey),
	}
}

func (m *CertManager) freshBundle() (*bundle, error) {
	ca, caKey, err := m.newCA()
	if err != nil {
		return nil, err
	}
	b := &bundle{cas: []*x509.Certificate{ca}, caKey: caKey}
	if b.serving, b.servingKey, err = m.newServing(ca, caKey); err != nil {
		return nil, err
	}
	return b, nil
}

// rotate renews what is due and writes the Secret back if anything changed.
// A new CA is first only added to the trusted bundle; the serving
// certificate moves to it on a later pass, once the caBundle of the webhook
// configuration trusts it, so no replica ever serves a certificate the API
// server cannot verify.
func (m *CertManager) rotate(ctx context.Context, secret *corev1.Secret) (*corev1.Secret, error) {
	now := m.cfg.Clock.Now()
	b, err := parseBundle(secret.Data)
	var why string
	switch {
	case err != nil:
		m.log.Warn("certificate secret unusable; replacing it", zap.Error(err))
		if b, err = m.freshBundle(); err != nil {
			return nil, err
		}
		why = "secret unusable"
	case dueForRenewal(b.cas[0], now):
		ca, caKey, err := m.newCA()
		if err != nil {
			return nil, err
		}
		b.cas, b.caKey = append([]*x509.Certificate{ca}, b.cas...), caKey
		why = "CA due for renewal"
	default:
		trusted, err := m.caBundleTrusts(ctx, b.cas[0])
		if err != nil {
			return nil, err
		}
		switch {
		case dueForRenewal(b.serving, now):
			why = "serving certificate due for renewal"
		case trusted && b.serving.CheckSignatureFrom(b.cas[0]) != nil:
			why = "serving certificate moves to the new CA"
		case !slices.Equal(b.serving.DNSNames, m.cfg.DNSNames()):
			why = "serving certificate names changed"
		}
		if why != "" {
			if b.serving, b.servingKey, err = m.newServing(b.cas[0], b.caKey); err != nil {
				return nil, err
			}
		}
	}
	// Trust the signing CA and at most one predecessor, while it is valid:
	// enough for a serving certificate still signed by it.
	kept := b.cas[:1]
	for _, c := range b.cas[1:] {
		if len(kept) < 2 && now.Before(c.NotAfter) {
			kept = append(kept, c)
		}
	}
	if len(kept) != len(b.cas) && why == "" {
		why = "expired CA dropped"
	}
	b.cas = kept
	if why == "" {
		return secret, nil
	}
	updated := secret.DeepCopy()
	updated.Data = b.data()
	updated, err = m.client.CoreV1().Secrets(m.cfg.Namespace).Update(ctx, updated, metav1.UpdateOptions{})
	if err != nil {
		// A conflict means another replica rotated first; the next pass
		// reads its work.
		return nil, fmt.Errorf("update secret %s/%s (%s): %w", m.cfg.Namespace, m.cfg.SecretName, why, err)
	}
	m.log.Info("rotated certificates", zap.String("why", why), zap.Int("trustedCAs", len(b.cas)), zap.Time("servingNotAfter", b.serving.NotAfter))
	return updated, nil
}

func dueForRenewal(c *x509.Certificate, now time.Time) bool {
	lifetime := c.NotAfter.Sub(c.NotBefore)
	return now.After(c.NotAfter.Add(-lifetime / 3))
}

// caBundleTrusts reports whether every webhook of the configuration trusts
// ca. A missing configuration trusts nothing.
func (m *CertManager) caBundleTrusts(ctx context.Context, ca *x509.Certificate) (bool, error) {
	cfg, err := m.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, m.cfg.WebhookConfigName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("get mutatingwebhookconfiguration %s: %w", m.cfg.WebhookConfigName, err)
	}
	for _, w := range cfg.Webhooks {
		certs, err := parseCerts(w.ClientConfig.CABundle)
		if err != nil || !slices.ContainsFunc(certs, ca.Equal) {
			return false, nil
		}
	}
	return len(cfg.Webhooks) > 0, nil
}

// patchCABundle sets caBundle on every webhook of the configuration that
// differs, with a JSON patch that tests each webhook's name first.
func (m *CertManager) patchCABundle(ctx context.Context, caPEM []byte) error {
	api := m.client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cfg, err := api.Get(ctx, m.cfg.WebhookConfigName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		m.log.Warn("no MutatingWebhookConfiguration to put the CA in; the API server cannot call this webhook", zap.String("name", m.cfg.WebhookConfigName))
		return nil
	}
	if err != nil {
		return fmt.Errorf("get mutatingwebhookconfiguration %s: %w", m.cfg.WebhookConfigName, err)
	}
	type op struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value any    `json:"value"`
	}
	var ops []op
	for i, w := range cfg.Webhooks {
		if bytes.Equal(w.ClientConfig.CABundle, caPEM) {
			continue
		}
		ops = append(ops,
			op{Op: "test", Path: fmt.Sprintf("/webhooks/%d/name", i), Value: w.Name},
			op{Op: "add", Path: fmt.Sprintf("/webhooks/%d/clientConfig/caBundle", i), Value: caPEM})
	}
	if len(ops) == 0 {
		return nil
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return fmt.Errorf("encode caBundle patch: %w", err)
	}
	if _, err := api.Patch(ctx, m.cfg.WebhookConfigName, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: "detour-webhook"}); err != nil {
		return fmt.Errorf("patch caBundle of mutatingwebhookconfiguration %s: %w", m.cfg.WebhookConfigName, err)
	}
	m.log.Info("caBundle updated", zap.String("mutatingwebhookconfiguration", m.cfg.WebhookConfigName), zap.Int("webhooks", len(ops)/2))
	return nil
}

// load makes the Secret's serving certificate the one handshakes get.
func (m *CertManager) load(secret *corev1.Secret) error {
	certPEM, keyPEMBytes := secret.Data[corev1.TLSCertKey], secret.Data[corev1.TLSPrivateKeyKey]
	if cur := m.current.Load(); cur != nil && bytes.Equal(cur.pem, certPEM) {
		return nil
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEMBytes)
	if err != nil {
		return fmt.Errorf("%w: %s/%s: %w", ErrBadSecret, secret.Namespace, secret.Name, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return fmt.Errorf("%w: parse tls.crt: %w", ErrBadSecret, err)
		}
	}
	m.current.Store(&loadedCert{cert: &pair, pem: bytes.Clone(certPEM), notAfter: leaf.NotAfter})
	if m.metrics != nil {
		m.metrics.certExpiry.Set(float64(leaf.NotAfter.Unix()))
	}
	m.log.Info("serving certificate loaded", zap.String("serial", leaf.SerialNumber.String()), zap.Time("notAfter", leaf.NotAfter))
	return nil
}

func parseBundle(data map[string][]byte) (*bundle, error) {
	cas, err := parseCerts(data[secretCACert])
	if err != nil || len(cas) == 0 {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadSecret, secretCACert, err)
	}
	caKey, err := parseKey(data[secretCAKey])
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadSecret, secretCAKey, err)
	}
	if !caKey.PublicKey.Equal(cas[0].PublicKey) {
		return nil, fmt.Errorf("%w: %s does not match the first certificate of %s", ErrBadSecret, secretCAKey, secretCACert)
	}
	serving, err := parseCerts(data[corev1.TLSCertKey])
	if err != nil || len(serving) == 0 {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadSecret, corev1.TLSCertKey, err)
	}
	servingKey, err := parseKey(data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadSecret, corev1.TLSPrivateKeyKey, err)
	}
	return &bundle{cas: cas, caKey: caKey, serving: serving[0], servingKey: servingKey}, nil
}

func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return out, nil
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

func parseKey(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("no PEM block")
	}
	return x509.ParseECPrivateKey(block.Bytes)
}

func keyPEM(k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil { // only fails for keys on unknown curves
		panic(fmt.Sprintf("marshal EC key: %v", err))
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

// Certificates start five minutes in the past, for clock skew.
const backdate = 5 * time.Minute

func (m *CertManager) newCA() (*x509.Certificate, *ecdsa.PrivateKey, error) {
	now := m.cfg.Clock.Now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: fmt.Sprintf("detour-webhook-ca@%d", now.Unix()), Organization: []string{"detour"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(m.cfg.CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	return sign(tmpl, nil, nil)
}

func (m *CertManager) newServing(ca *x509.Certificate, caKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	now := m.cfg.Clock.Now()
	names := m.cfg.DNSNames()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: names[2]},
		DNSNames:    names,
		NotBefore:   now.Add(-backdate),
		NotAfter:    now.Add(m.cfg.CertValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotAfter.After(ca.NotAfter) {
		tmpl.NotAfter = ca.NotAfter
	}
	return sign(tmpl, ca, caKey)
}

// sign creates a key and a certificate from tmpl, signed by parent (self
// signed when parent is nil).
func sign(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("serial: %w", err)
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse certificate: %w", err)
	}
	return cert, key, nil
}
