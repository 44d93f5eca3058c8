package cluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// certSpec is one certificate signed by the cluster CA.
type certSpec struct {
	name   string
	cn     string
	orgs   []string
	server bool
	dns    []string
	ips    []string
}

func certSpecs() []certSpec {
	return []certSpec{
		{name: "apiserver", cn: "kube-apiserver", server: true,
			dns: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"},
			ips: []string{NodeIP, APIServerSvcIP, "127.0.0.1"}},
		{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}},
		{name: "admin", cn: "detour-admin", orgs: []string{"system:masters"}},
		{name: "controller-manager", cn: "system:kube-controller-manager"},
		{name: "scheduler", cn: "system:kube-scheduler"},
		{name: "kube-proxy", cn: "system:kube-proxy"},
		{name: "kubelet", cn: "system:node:" + NodeName, orgs: []string{"system:nodes"}},
		{name: "kubelet-serving", cn: "system:node:" + NodeName, server: true, dns: []string{NodeName}, ips: []string{NodeIP}},
	}
}

// EnsurePKI creates the CA, the component certificates, the service-account
// key pair and the kubeconfigs; existing files are kept.
func EnsurePKI(cfg Config) error {
	for _, d := range []string{filepath.Dir(cfg.pki("x")), filepath.Dir(cfg.kubeconfig("x"))} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	caCert, caKey, err := ensureCA(cfg)
	if err != nil {
		return err
	}
	for _, s := range certSpecs() {
		if exists(cfg.pki(s.name+".crt")) && exists(cfg.pki(s.name+".key")) {
			continue
		}
		if err := issue(cfg, s, caCert, caKey); err != nil {
			return fmt.Errorf("issue %s certificate: %w", s.name, err)
		}
	}
	if !exists(cfg.pki("sa.key")) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return fmt.Errorf("generate service-account key: %w", err)
		}
		pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
		if err != nil {
			return fmt.Errorf("marshal service-account public key: %w", err)
		}
		if err := writePEM(cfg.pki("sa.pub"), "PUBLIC KEY", pub); err != nil {
			return err
		}
		if err := writeKey(cfg.pki("sa.key"), key); err != nil {
			return err
		}
	}
	server := fmt.Sprintf("https://%s:%d", NodeIP, APIServerPort)
	for name, user := range map[string]string{
		"admin": "admin", "controller-manager": "controller-manager", "scheduler": "scheduler",
		"kube-proxy": "kube-proxy", "kubelet": "kubelet",
	} {
		if err := writeKubeconfig(cfg, name, user, server); err != nil {
			return err
		}
	}
	return nil
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func ensureCA(cfg Config) (*x509.Certificate, crypto.Signer, error) {
	if exists(cfg.pki("ca.crt")) && exists(cfg.pki("ca.key")) {
		return loadPair(cfg.pki("ca.crt"), cfg.pki("ca.key"))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "detour-local-cluster-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA: %w", err)
	}
	if err := writeKey(cfg.pki("ca.key"), key); err != nil {
		return nil, nil, err
	}
	if err := writePEM(cfg.pki("ca.crt"), "CERTIFICATE", der); err != nil {
		return nil, nil, err
	}
	return loadPair(cfg.pki("ca.crt"), cfg.pki("ca.key"))
}

func issue(cfg Config, s certSpec, ca *x509.Certificate, caKey crypto.Signer) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: s.cn, Organization: s.orgs},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		DNSNames:     s.dns,
	}
	if s.server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	for _, ip := range s.ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	if err := writeKey(cfg.pki(s.name+".key"), key); err != nil {
		return err
	}
	return writePEM(cfg.pki(s.name+".crt"), "CERTIFICATE", der)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal key: %w", err)
	}
	return writePEM(path, "EC PRIVATE KEY", der)
}

func writePEM(path, typ string, der []byte) error {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func loadPair(certPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	cb, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", certPath, err)
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", keyPath, err)
	}
	cBlock, _ := pem.Decode(cb)
	kBlock, _ := pem.Decode(kb)
	if cBlock == nil || kBlock == nil {
		return nil, nil, errors.New("bad PEM in " + certPath + " or " + keyPath)
	}
	cert, err := x509.ParseCertificate(cBlock.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("parse %s: %w", certPath, err)
	}
	key, err := x509.ParseECPrivateKey(kBlock.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("parse %s: %w", keyPath, err)
	}
	return cert, key, nil
}

func writeKubeconfig(cfg Config, name, user, server string) error {
	read := func(p string) (string, error) {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", fmt.Errorf("read %s: %w", p, err)
		}
		return base64.StdEncoding.EncodeToString(b), nil
	}
	ca, err := read(cfg.pki("ca.crt"))
	if err != nil {
		return err
	}
	crt, err := read(cfg.pki(name + ".crt"))
	if err != nil {
		return err
	}
	key, err := read(cfg.pki(name + ".key"))
	if err != nil {
		return err
	}
	doc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: detour-local
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: detour-local
  context:
    cluster: detour-local
    user: %s
current-context: detour-local
`, server, ca, user, crt, key, user)
	if err := os.WriteFile(cfg.kubeconfig(name), []byte(doc), 0o600); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", name, err)
	}
	return nil
}
