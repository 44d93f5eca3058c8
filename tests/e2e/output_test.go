//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/detour-dev/detour/tests/internal/images"
)

// TestListAndInterceptOutput: `detour list -A -l SELECTOR -o json` finds
// the labelled workloads of every namespace and nothing else, with your
// intercept on them; `detour intercept -o json` prints what was created
// in status's schema — never the environment.
func TestListAndInterceptOutput(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cs := clientset(t, restConfig(t))
	u := newUser(t)
	u.must("install", "--image", images.Detour)
	nsA, nsB := createNamespace(ctx, t, cs, "outa"), createNamespace(ctx, t, cs, "outb")
	deployWeb(ctx, t, cs, nsA, "web", 1)
	deployWeb(ctx, t, cs, nsB, "web", 1)
	deployWeb(ctx, t, cs, nsB, "other", 1)
	label := fmt.Sprintf(`{"metadata":{"labels":{"detour-e2e-team":%q}}}`, nsA)
	for _, ns := range []string{nsA, nsB} {
		if _, err := cs.AppsV1().Deployments(ns).Patch(ctx, "web", types.MergePatchType, []byte(label), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	local := localServer(t, "workstation")
	r := u.must("intercept", "web", "-n", nsA, "--port", fmt.Sprintf("%d:http", local), "--env-file", t.TempDir()+"/web.env", "-o", "json")
	var created map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil {
		t.Fatalf("intercept -o json is not JSON: %v\n%s", err, r.stdout)
	}
	if created["name"] != "web-"+nsA || created["state"] == nil || created["pods"] == nil || created["workload"] != "deployment/web" {
		t.Errorf("intercept -o json: %s", r.stdout)
	}
	if _, ok := created["env"]; ok || strings.Contains(r.stdout, "SECRET_VALUE") {
		t.Errorf("intercept -o json printed the environment:\n%s", r.stdout)
	}

	r = u.must("list", "-A", "-l", "detour-e2e-team="+nsA, "-o", "json")
	var rows []struct {
		Workload, Namespace string
		Intercepted         []string `json:"interceptedBy"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		t.Fatalf("list -o json: %v\n%s", err, r.stdout)
	}
	if len(rows) != 2 || rows[0].Namespace != nsA || rows[1].Namespace != nsB || rows[0].Workload != "deployment/web" ||
		len(rows[0].Intercepted) != 1 || rows[0].Intercepted[0] != "web-"+nsA || len(rows[1].Intercepted) != 0 {
		t.Errorf("list -A -l: %s", r.stdout)
	}
	table := u.must("list", "-A", "-l", "detour-e2e-team="+nsA).stdout
	if !strings.HasPrefix(table, "NAMESPACE") || strings.Contains(table, "deployment/other") {
		t.Errorf("list -A -l table:\n%s", table)
	}
	// Shell completion from the cluster (cobra's __complete, what the
	// completion scripts call).
	if got := u.must("__complete", "intercept", "-n", nsB, "").stdout; !strings.Contains(got, "other\n") || !strings.Contains(got, "web\n") {
		t.Errorf("completing intercept's NAME in %s:\n%s", nsB, got)
	}
	if got := u.must("__complete", "intercept", "web", "-n", nsA, "--port", "").stdout; !strings.Contains(got, fmt.Sprintf("%d:http\n", echoHTTPPort)) {
		t.Errorf("completing --port:\n%s", got)
	}
	if got := u.must("__complete", "status", "-n", "").stdout; !strings.Contains(got, nsA+"\n") {
		t.Errorf("completing -n:\n%s", got)
	}
	u.must("leave", "web-"+nsA)
}
