//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/tests/internal/images"
)

// ask sends one request on a new connection with the given headers and
// returns the body.
func ask(url string, header ...string) string {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return "error: " + err.Error()
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

// steadily waits until ask answers as want says n times in a row (kube-proxy
// lag: see waitForSteady).
func steadily(t testing.TB, what string, n int, within time.Duration, ask func() string, want func(string) bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	inARow, last := 0, ""
	for inARow < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not %d good answers in a row within %s; last: %q", what, n, within, last)
		}
		if last = ask(); want(last) {
			inARow++
		} else {
			inARow = 0
			time.Sleep(200 * time.Millisecond)
		}
	}
}

var (
	headerLine  = regexp.MustCompile(`(?m)^\s+header:\s+(\S+): (\S+)$`)
	previewLine = regexp.MustCompile(`(?m)^\s+preview:\s+(\S+)$`)
)

// TestPersonalIntercepts: two developers (two daemons) hold http intercepts
// on one Deployment; each gets only the requests with their header, the
// rest reach the app; a preview link opened in headless Chromium shows the
// developer's page, and the same page without the link's token the app's.
func TestPersonalIntercepts(t *testing.T) {
	ctx := context.Background()
	cs := clientset(t, restConfig(t))
	alice, bob := newUser(t), newUser(t)
	alice.must("install", "--image", images.Detour)

	ns := createNamespace(ctx, t, cs, "http")
	svc := deployWeb(ctx, t, cs, ns, "web", 2)
	url := fmt.Sprintf("http://%s:80/", svc.Spec.ClusterIP)
	eventually(t, time.Minute, "the Service answers before any intercept", func() bool { return strings.HasPrefix(who(url), "hello from web-") })
	isApp := func(s string) bool { return strings.HasPrefix(s, "hello from web-") }

	aliceLocal, bobLocal := localServer(t, "alice-workstation"), localServer(t, "bob-workstation")
	r := alice.must("intercept", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", aliceLocal),
		"--http-match", "auto", "--preview-url", "--ingress-host", svc.Spec.ClusterIP, "--ingress-port", "80")
	hm := headerLine.FindStringSubmatch(r.stdout)
	pm := previewLine.FindStringSubmatch(r.stdout)
	if hm == nil || pm == nil || hm[1] != "x-detour-intercept-id" || !strings.HasSuffix(hm[2], ":web-"+ns) {
		t.Fatalf("summary lacks the generated header or the preview URL:\n%s", r)
	}
	aliceHeader, aliceValue, preview := hm[1], hm[2], pm[1]
	if !strings.HasPrefix(preview, "http://"+svc.Spec.ClusterIP+"/?detour-preview=") {
		t.Fatalf("preview URL %q: want it on the ingress host given", preview)
	}
	// Rule sets of different developers must be disjoint (a header both
	// name, with different values): X-Dev=bob alone could match alice's
	// requests too (a request carrying both headers) — refused, naming
	// her; with his own x-detour-intercept-id as well it is disjoint.
	if r := bob.run("intercept", "bobs", "--workload", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", bobLocal), "--http-match", "X-Dev=bob"); r.code == 0 ||
		!strings.Contains(r.stderr, "holds intercept \"web-"+ns+"\"") || !strings.Contains(r.stderr, "could match the same requests") {
		t.Fatalf("bob's overlapping rules: want a refusal naming alice's intercept, got %s", r)
	}
	bob.must("intercept", "bobs", "--workload", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", bobLocal), "--http-match", "X-Dev=bob", "--http-match", "x-detour-intercept-id=bob")
	bobsHeaders := []string{"x-dev", "bob", "x-detour-intercept-id", "bob"}

	t.Run("each request lands where its header says", func(t *testing.T) {
		steadily(t, "alice's header", 20, kubeProxyLag, func() string { return ask(url, aliceHeader, aliceValue) }, func(s string) bool { return s == "alice-workstation" })
		steadily(t, "bob's headers", 20, kubeProxyLag, func() string { return ask(url, bobsHeaders...) }, func(s string) bool { return s == "bob-workstation" })
		steadily(t, "no header", 20, kubeProxyLag, func() string { return ask(url) }, isApp)
		steadily(t, "someone else's header", 10, kubeProxyLag, func() string { return ask(url, "x-dev", "carol") }, isApp)
	})

	t.Run("status shows the header and the preview URL", func(t *testing.T) {
		var st struct {
			Intercepts []struct {
				Name       string   `json:"name"`
				Mechanism  string   `json:"mechanism"`
				HTTPMatch  []string `json:"httpMatch"`
				PreviewURL string   `json:"previewUrl"`
			} `json:"intercepts"`
		}
		out := alice.must("status", "-o", "json").stdout
		if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Intercepts) != 1 {
			t.Fatalf("status -o json: %v\n%s", err, out)
		}
		ic := st.Intercepts[0]
		if ic.Mechanism != "http" || len(ic.HTTPMatch) != 1 || ic.HTTPMatch[0] != aliceHeader+"="+aliceValue || ic.PreviewURL != preview {
			t.Fatalf("status: %+v", ic)
		}
		table := alice.must("status").stdout
		if !strings.Contains(table, "requests with "+aliceHeader+": "+aliceValue) || !strings.Contains(table, preview) {
			t.Fatalf("status table lacks the header or the preview URL:\n%s", table)
		}
	})

	t.Run("a global tcp intercept is refused while personal ones hold the port", func(t *testing.T) {
		r := bob.run("intercept", "everything", "--workload", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", bobLocal), "--mechanism", "tcp")
		if r.code == 0 || !strings.Contains(r.stderr, "personal (http) intercepts by") {
			t.Fatalf("want a refusal naming the http intercepts:\n%s", r)
		}
	})

	t.Run("preview URL in headless Chromium", func(t *testing.T) {
		chromium, err := exec.LookPath("chromium")
		if err != nil {
			t.Fatalf("chromium is not installed (tests/deps.sh installs it): %v", err)
		}
		profile := t.TempDir()
		page := func(profile, url string) string {
			ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			// Only the cluster's Service address is ever opened; the flags
			// keep Chromium from calling anywhere on its own.
			cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
				"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
				"--disable-default-apps", "--disable-extensions", "--user-data-dir="+profile, "--dump-dom", url)
			out, err := cmd.Output()
			if err != nil {
				return fmt.Sprintf("chromium failed: %v", err)
			}
			return string(out)
		}
		steadily(t, "the preview link shows alice's page", 3, kubeProxyLag, func() string { return page(profile, preview) },
			func(s string) bool { return strings.Contains(s, "alice-workstation") })
		// The same browser keeps its cookie: the plain URL still shows alice's page.
		steadily(t, "the same browser without the token", 3, kubeProxyLag, func() string { return page(profile, url) },
			func(s string) bool { return strings.Contains(s, "alice-workstation") })
		// Another browser without the token sees the app.
		other := t.TempDir()
		steadily(t, "another browser", 3, kubeProxyLag, func() string { return page(other, url) },
			func(s string) bool { return strings.Contains(s, "hello from web-") })
	})

	t.Run("errors name what is wrong", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"intercept", "web", "-n", ns, "--port", "9:http", "--http-match", "x-dev"}, `--http-match "x-dev": want NAME=VALUE`},
			{[]string{"intercept", "web", "-n", ns, "--port", "9:http", "--http-match", "x=y", "--preview-url", "--ingress-port", "80"}, "--ingress-host missing"},
			{[]string{"intercept", "web", "-n", ns, "--port", "9:http", "--http-match", "x=y", "--preview-url"}, "--ingress-host and --ingress-port"},
			{[]string{"intercept", "lines", "--workload", "web", "-n", ns, "--port", fmt.Sprintf("%d:tcp-echo", bobLocal), "--http-match", "x=lines"}, "does not speak HTTP on port"},
		} {
			r := bob.run(tc.args...)
			if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("detour %s: want an error containing %q:\n%s", strings.Join(tc.args, " "), tc.want, r)
			}
		}
		// A TLS annotation naming a missing Secret is caught before any rollout.
		// No replicas: the check must not need a pod.
		web, err := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		labels := map[string]string{"app": "web", "variant": "tls"}
		tmpl := *web.Spec.Template.DeepCopy()
		tmpl.Labels = labels
		tmpl.Annotations = map[string]string{annotations.TerminatingTLSSecret: "no-such-secret"}
		dep, err := cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "tlsweb"},
			Spec:       appsv1.DeploymentSpec{Replicas: new(int32), Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r := bob.run("intercept", dep.Name, "-n", ns, "--port", "9:http", "--service", "web", "--http-match", "x=tls")
		if r.code == 0 || !strings.Contains(r.stderr, `no Secret "no-such-secret"`) {
			t.Errorf("missing TLS Secret: want an error naming it:\n%s", r)
		}
	})

	t.Run("leave gives the requests back", func(t *testing.T) {
		alice.must("leave", "web-"+ns)
		bob.must("leave", "bobs")
		steadily(t, "alice's header after leave", 10, kubeProxyLag, func() string { return ask(url, aliceHeader, aliceValue) }, isApp)
		steadily(t, "bob's headers after leave", 10, kubeProxyLag, func() string { return ask(url, bobsHeaders...) }, isApp)
	})
}
