package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testKubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: u
  user: {token: TOKEN}
contexts:
- name: one
  context: {cluster: c, user: u}
- name: two
  context: {cluster: c, user: u}
current-context: one
`

// TestKubeCache: one kubeconfig and context, one set of clients (and so
// one connection to the API server); an edited file, another context or
// clients unused for kubeCacheIdle get new ones.
func TestKubeCache(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	write := func(token string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(testKubeconfig, "TOKEN", token)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now().Add(-time.Hour)
	write("t1", t0)
	now := time.Now()
	c := newKubeCache()
	c.now = func() time.Time { return now }
	get := func(ctx string) (string, any) {
		t.Helper()
		cfg, cs, err := c.get(path, ctx)
		if err != nil {
			t.Fatal(err)
		}
		return cfg.BearerToken, cs
	}
	tok, first := get("")
	if _, again := get(""); again != first || tok != "t1" {
		t.Errorf("the same kubeconfig twice: new clients (token %q)", tok)
	}
	if _, two := get("two"); two == first {
		t.Errorf("another context: the same clients")
	}
	write("t2", t0.Add(time.Second))
	if tok, edited := get(""); edited == first || tok != "t2" {
		t.Errorf("an edited kubeconfig: token %q, same clients %v; want t2 and new clients", tok, edited == first)
	}
	_, kept := get("")
	now = now.Add(kubeCacheIdle + time.Second)
	if _, later := get(""); later == kept {
		t.Errorf("clients unused for %s were kept", kubeCacheIdle)
	}
	if _, _, err := c.get(filepath.Join(t.TempDir(), "missing"), ""); err == nil {
		t.Errorf("a missing kubeconfig: no error")
	}
}
