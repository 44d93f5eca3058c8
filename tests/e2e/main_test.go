//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/detour-dev/detour/tests/internal/cluster"
)

func TestMain(m *testing.M) {
	code := m.Run()
	// The egress guard must not have dropped a single packet during the
	// run: a drop means something tried to leave the cluster's namespace.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cluster.CheckGuardCounters(ctx, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: egress guard check: %v\n", err)
		code = 1
	} else {
		fmt.Println("egress guard: all drop counters are zero")
	}
	os.Exit(code)
}

// kubeconfigPath is where the tests find the cluster.
func kubeconfigPath() string {
	if p := os.Getenv("DETOUR_KUBECONFIG"); p != "" {
		return p
	}
	return cluster.DefaultConfig().AdminKubeconfig()
}

func restConfig(t testing.TB) *rest.Config {
	t.Helper()
	p := kubeconfigPath()
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no kubeconfig at %s (run `go run ./tests/cluster up` or `make e2e`): %v", p, err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", p)
	if err != nil {
		t.Fatalf("load kubeconfig %s: %v", p, err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	return cfg
}

func clientset(t testing.TB, cfg *rest.Config) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	return cs
}
