package daemon

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// kubeCache keeps the API clients of recent intercepts, so that the next
// one with the same kubeconfig reuses their connection to the API server
// (a TLS handshake less in its set-up). It is keyed by the context and by
// the kubeconfig files' names, sizes and modification times: an edited
// kubeconfig (a new token, another current context) gets new clients.
type kubeCache struct {
	mu  sync.Mutex
	m   map[string]*kubeEntry
	now func() time.Time
}

type kubeEntry struct {
	cfg  *rest.Config
	cs   kubernetes.Interface
	used time.Time
}

// kubeCacheIdle is how long clients nobody asked for are kept.
const kubeCacheIdle = 10 * time.Minute

func newKubeCache() *kubeCache { return &kubeCache{m: map[string]*kubeEntry{}, now: time.Now} }

// get returns the clients for kubeconfig ("" for the default loading
// rules) and kubeContext ("" for its current context).
func (c *kubeCache) get(kubeconfig, kubeContext string) (*rest.Config, kubernetes.Interface, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	key := kubeKey(rules, kubeContext)
	now := c.now()
	c.mu.Lock()
	for k, e := range c.m {
		if now.Sub(e.used) > kubeCacheIdle {
			delete(c.m, k)
		}
	}
	if e := c.m[key]; e != nil {
		e.used = now
		c.mu.Unlock()
		return e.cfg, e.cs, nil
	}
	c.mu.Unlock()
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext}).ClientConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	c.mu.Lock()
	c.m[key] = &kubeEntry{cfg: cfg, cs: cs, used: now}
	c.mu.Unlock()
	return cfg, cs, nil
}

// kubeKey names what the loading rules would read: each file's name,
// size and modification time (or its absence), and the context.
func kubeKey(rules *clientcmd.ClientConfigLoadingRules, kubeContext string) string {
	files := rules.GetLoadingPrecedence()
	if rules.ExplicitPath != "" {
		files = []string{rules.ExplicitPath}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "context=%q", kubeContext)
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, ";%q %d %d", f, fi.Size(), fi.ModTime().UnixNano())
		} else {
			fmt.Fprintf(&b, ";%q absent", f)
		}
	}
	return b.String()
}
