//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/detour-dev/detour/tests/internal/images"
)

// askWith sends one request with a method on a new connection; header
// pairs are added (so a header may repeat). A request other than GET
// carries the body "posted", which the app (tests/images/echo) echoes.
func askWith(method, url string, header ...string) string {
	return askWithin(5*time.Second, method, url, header...)
}

// askWithin is askWith with its own timeout: a request that hangs longer
// is an error.
func askWithin(timeout time.Duration, method, url string, header ...string) string {
	var body io.Reader
	if method != http.MethodGet {
		body = strings.NewReader("posted")
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return "error: " + err.Error()
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

// TestHTTPPathMethodBaggage: on the real cluster, alice takes her team's
// requests under /api/ (a path rule with a header), bob POSTs under
// /orders/ that carry his generated baggage member (auto with
// --http-auto-header baggage) among others, as a traced app passes them
// on — disjoint from alice's by path (without it, bob's create is refused:
// a POST to /api/ with both could match both); everything else reaches
// the app. A third rule set that could take alice's requests is
// refused naming her; status shows the rules.
func TestHTTPPathMethodBaggage(t *testing.T) {
	ctx := context.Background()
	cs := clientset(t, restConfig(t))
	alice, bob := newUser(t), newUser(t)
	alice.must("install", "--image", images.Detour)

	ns := createNamespace(ctx, t, cs, "httpmatch")
	svc := deployWeb(ctx, t, cs, ns, "web", 2)
	base := fmt.Sprintf("http://%s:80", svc.Spec.ClusterIP)
	isApp := func(s string) bool { return strings.HasPrefix(s, "hello from web-") }
	echoed := func(s string) bool { return s == "posted" } // the app, to a POST
	eventually(t, time.Minute, "the Service answers before any intercept", func() bool { return isApp(who(base + "/")) })

	aliceLocal, bobLocal := localServer(t, "alice-workstation"), localServer(t, "bob-workstation")
	r := alice.must("intercept", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", aliceLocal),
		"--http-match", "x-team=blue", "--http-path-prefix", "/api/")
	if !strings.Contains(r.stdout, "requests:   path prefix /api/") || !strings.Contains(r.stdout, "'http://web."+ns+":80/api/'") {
		t.Fatalf("summary lacks the path rule or a try line on it:\n%s", r)
	}
	r = bob.must("intercept", "bobs", "--workload", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", bobLocal),
		"--http-match", "auto", "--http-auto-header", "baggage", "--http-method", "post", "--http-path-prefix", "/orders/")
	hm := headerLine.FindStringSubmatch(r.stdout)
	if hm == nil || hm[1] != "baggage" || !strings.HasPrefix(hm[2], "detour-intercept-id=") || !strings.HasSuffix(hm[2], ":bobs") || !strings.Contains(r.stdout, " -X POST 'http://web."+ns+":80/orders/'") {
		t.Fatalf("summary lacks the generated baggage member or the method:\n%s", r)
	}
	member := hm[2]

	t.Run("each request lands where its rules say", func(t *testing.T) {
		for _, c := range []struct {
			what, method, path string
			header             []string
			want               func(string) bool
		}{
			{"alice's team under /api/", "GET", "/api/users", []string{"X-Team", "blue"}, func(s string) bool { return s == "alice-workstation" }},
			{"alice's team elsewhere", "GET", "/about", []string{"X-Team", "blue"}, isApp},
			{"another team under /api/", "GET", "/api/users", []string{"X-Team", "red"}, isApp},
			{"bob's member among others, POST", "POST", "/orders/7", []string{"Baggage", "session=1,  " + member + ";ttl=3", "Baggage", "k=v"}, func(s string) bool { return s == "bob-workstation" }},
			{"bob's member, GET", "GET", "/orders/7", []string{"Baggage", member}, isApp},
			{"bob's member, POST elsewhere", "POST", "/api/x", []string{"Baggage", member}, echoed},
			{"no rules", "POST", "/", nil, echoed},
		} {
			steadily(t, c.what, 10, kubeProxyLag, func() string { return askWith(c.method, base+c.path, c.header...) }, c.want)
		}
	})

	t.Run("a rule set that could take alice's requests is refused", func(t *testing.T) {
		r := bob.run("intercept", "v2", "--workload", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", bobLocal),
			"--http-match", "x-team=blue", "--http-path-regex", "/api/v2/.*")
		if r.code == 0 || !strings.Contains(r.stderr, "holds intercept") || !strings.Contains(r.stderr, "path-prefix=/api/") {
			t.Fatalf("want a refusal naming alice's intercept and rule:\n%s", r)
		}
		r = bob.run("intercept", "web2", "--workload", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", bobLocal),
			"--http-match", "x-team=blue", "--http-path-prefix", "/web/")
		if r.code != 0 {
			t.Fatalf("a diverging prefix is disjoint from alice's:\n%s", r)
		}
		bob.must("leave", "web2")
		steadily(t, "alice's requests unaffected", 5, kubeProxyLag, func() string { return askWith("GET", base+"/api/x", "X-Team", "blue") }, func(s string) bool { return s == "alice-workstation" })
	})

	t.Run("status shows the rules", func(t *testing.T) {
		table := bob.must("status").stdout
		if !strings.Contains(table, "requests with baggage: "+member+"; method POST, path prefix /orders/") {
			t.Fatalf("status table lacks bob's rules:\n%s", table)
		}
		list := alice.must("list", "-n", ns).stdout
		if !strings.Contains(list, "web-"+ns+": requests with x-team: blue; path prefix /api/") {
			t.Fatalf("list lacks alice's rules:\n%s", list)
		}
		var st struct {
			Intercepts []struct {
				MechanismArgs map[string][]string `json:"mechanismArgs"`
			} `json:"intercepts"`
		}
		out := alice.must("status", "-o", "json").stdout
		if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Intercepts) != 1 {
			t.Fatalf("status -o json: %v\n%s", err, out)
		}
		if p := st.Intercepts[0].MechanismArgs["path-prefix"]; len(p) != 1 || p[0] != "/api/" {
			t.Fatalf("status -o json mechanismArgs: %v", st.Intercepts[0].MechanismArgs)
		}
	})
}
