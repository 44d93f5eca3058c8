//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/detour-dev/detour/tests/internal/images"
)

// TestCIPreviewScript runs deploy/ci/detour-preview.sh — the script the CI
// guide's GitHub Actions and GitLab jobs call — against the local
// cluster, as a CI job would: the branch's build (echo, "branch-build")
// started on the runner, a personal intercept with a preview link, the
// link "posted", the tests run with the header (a request with it reaches
// the build, one without reaches the app, the preview link reaches the
// build), and the intercept left at the end. A failing test run exits
// non-zero and still leaves the intercept.
func TestCIPreviewScript(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cs := clientset(t, restConfig(t))
	u := newUser(t)
	u.must("install", "--image", images.Detour)
	ns := createNamespace(ctx, t, cs, "ci")
	svc := deployWeb(ctx, t, cs, ns, "web", 1)
	dir := t.TempDir()
	echo := filepath.Join(dir, "echo")
	if out, err := exec.Command("go", "build", "-o", echo, "github.com/detour-dev/detour/tests/images/echo").CombinedOutput(); err != nil {
		t.Fatalf("build echo: %v\n%s", err, out)
	}
	local := freePort(t)
	posted := filepath.Join(dir, "posted")
	script, _ := filepath.Abs("../../deploy/ci/detour-preview.sh")
	run := func(testCmd string) (result, time.Duration) {
		cmd := exec.CommandContext(ctx, "bash", script)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+u.kube, "DETOUR_HOME="+u.home, "XDG_CONFIG_HOME="+filepath.Join(u.home, "config"),
			"DETOUR="+u.bin, "WORKLOAD=web", "NAMESPACE="+ns, "SERVICE_PORT=http", fmt.Sprintf("LOCAL_PORT=%d", local),
			fmt.Sprintf("START_CMD=HTTP_ADDR=127.0.0.1:%d TCP_ADDR=127.0.0.1:0 UDP_ADDR=127.0.0.1:0 POD_NAME=branch-build exec %s", local, echo),
			"INGRESS_HOST="+svc.Spec.ClusterIP, "INGRESS_PORT=80", "INTERCEPT_NAME=ci-e2e",
			`POST_CMD=echo "$DETOUR_PREVIEW_URL" > `+posted, "TEST_CMD="+testCmd, "E2E_JAR="+filepath.Join(dir, "cookies"))
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		start := time.Now()
		err := cmd.Run()
		r := result{stdout: out.String(), stderr: errOut.String()}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			r.code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("run the script: %v", err)
		}
		return r, time.Since(start)
	}
	// The tests a CI job would run: retried for kube-proxy's lag.
	tests := `set -e
try() { for i in $(seq 30); do if "$@"; then return 0; fi; sleep 1; done; echo "failed: $*" >&2; return 1; }
try sh -c 'curl -fsS -H "$DETOUR_HEADER_NAME: $DETOUR_HEADER_VALUE" "$DETOUR_INGRESS_URL" | grep -q "hello from branch-build"'
try sh -c 'curl -fsS "$DETOUR_INGRESS_URL" | grep -q "hello from web-"'
try sh -c 'curl -fsS -L -c "$E2E_JAR" -b "$E2E_JAR" "$DETOUR_PREVIEW_URL" | grep -q "hello from branch-build"'
echo tests-passed`
	r, took := run(tests)
	if r.code != 0 || !strings.Contains(r.stdout, "tests-passed") || !strings.Contains(r.stderr, "intercept ci-e2e left") {
		t.Fatalf("the CI script: %s", r)
	}
	link, _ := os.ReadFile(posted)
	if !strings.HasPrefix(string(link), "http://"+svc.Spec.ClusterIP+"/?detour-preview=") {
		t.Errorf("posted %q, want the preview link", link)
	}
	t.Logf("build → intercept → tests → leave in %s", took.Round(time.Millisecond))
	assertNoIntercept(t, u, "ci-e2e")

	r, _ = run(`echo "tests ran with $DETOUR_HEADER_NAME"; exit 3`)
	if r.code != 3 || !strings.Contains(r.stdout, "tests ran with x-detour-intercept-id") || !strings.Contains(r.stderr, "intercept ci-e2e left, build stopped (exit 3)") {
		t.Fatalf("a failing test run: want exit 3 and the intercept left: %s", r)
	}
	assertNoIntercept(t, u, "ci-e2e")
	if got := who(fmt.Sprintf("http://%s/", svc.Spec.ClusterIP)); !strings.HasPrefix(got, "hello from web-") {
		t.Errorf("after the failed run the Service answers %q", got)
	}
}

// assertNoIntercept checks that the user's daemon (if one runs) holds no
// intercept of that name.
func assertNoIntercept(t *testing.T, u *user, name string) {
	t.Helper()
	r := u.run("status", "-o", "json")
	var st statusJSON
	if r.code == 0 && json.Unmarshal([]byte(r.stdout), &st) == nil {
		for _, ic := range st.Intercepts {
			if ic.Name == name {
				t.Fatalf("intercept %s is still there after the script: %s", name, r.stdout)
			}
		}
	}
}
