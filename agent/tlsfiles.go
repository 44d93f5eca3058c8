package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// tlsFiles reads the TLS Secrets the webhook mounted into the agent. The
// kubelet updates mounted Secrets in place, so certificates are re-read
// when their files change.
type tlsFiles struct {
	terminatingDir string
	originatingDir string

	mu     sync.Mutex
	loaded map[string]*loadedPair // by directory
}

type loadedPair struct {
	mtime   time.Time
	checked time.Time
	cert    *tls.Certificate
}

// recheckEvery bounds how often a handshake looks at the files' mtime.
const recheckEvery = 10 * time.Second

func present(dir string) (bool, error) {
	if dir == "" {
		return false, nil
	}
	_, err := os.Stat(filepath.Join(dir, "tls.crt"))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, err
}

// pair returns dir's certificate, reloading it when tls.crt changed.
func (t *tlsFiles) pair(dir string) (*tls.Certificate, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	lp := t.loaded[dir]
	if lp != nil && now.Sub(lp.checked) < recheckEvery {
		return lp.cert, nil
	}
	crt, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	st, err := os.Stat(crt)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s: %w", crt, err)
	}
	if lp != nil && st.ModTime().Equal(lp.mtime) {
		lp.checked = now
		return lp.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(crt, key)
	if err != nil {
		return nil, fmt.Errorf("TLS Secret mounted at %s (want tls.crt and tls.key, PEM): %w", dir, err)
	}
	if t.loaded == nil {
		t.loaded = map[string]*loadedPair{}
	}
	t.loaded[dir] = &loadedPair{mtime: st.ModTime(), checked: now, cert: &cert}
	return &cert, nil
}

// terminating is the server config for inbound TLS, nil when the pod has
// no terminating Secret.
func (t *tlsFiles) terminating() (*tls.Config, error) {
	ok, err := present(t.terminatingDir)
	if err != nil || !ok {
		return nil, err
	}
	if _, err := t.pair(t.terminatingDir); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return t.pair(t.terminatingDir)
		},
	}, nil
}

// toApp is the client config for TLS to the app: with an originating
// Secret, its certificate is presented and its ca.crt (when present)
// verifies the app; with only a terminating Secret, the app is assumed to
// serve TLS itself (that is why it had a certificate) and plain TLS is
// spoken. nil means plain text.
func (t *tlsFiles) toApp() (*tls.Config, error) {
	orig, err := present(t.originatingDir)
	if err != nil {
		return nil, err
	}
	if orig {
		if _, err := t.pair(t.originatingDir); err != nil {
			return nil, err
		}
		cfg := &tls.Config{
			MinVersion: tls.VersionTLS12,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				return t.pair(t.originatingDir)
			},
			InsecureSkipVerify: true, //nolint:gosec // the app is on loopback in the same pod; verified below when a CA is given
		}
		if pem, err := os.ReadFile(filepath.Join(t.originatingDir, "ca.crt")); err == nil {
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("ca.crt in the TLS Secret mounted at %s holds no PEM certificate", t.originatingDir)
			}
			cfg.VerifyPeerCertificate = verifyChainOnly(roots)
		}
		return cfg, nil
	}
	term, err := present(t.terminatingDir)
	if err != nil || !term {
		return nil, err
	}
	//nolint:gosec // the app is on loopback in the same pod and its certificate names the Service, not 127.0.0.1
	return &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true}, nil
}

// verifyChainOnly checks the app's certificate chains to roots without
// checking its name: the agent dials 127.0.0.1, which no certificate names.
func verifyChainOnly(roots *x509.CertPool) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("app presented no certificate")
		}
		certs := make([]*x509.Certificate, len(raw))
		for i, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return err
			}
			certs[i] = c
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
		return err
	}
}
