package agent_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/tunnel"
	"golang.org/x/net/http2"
)

// ruleIntercept creates an http intercept with header rules and the given
// method and path settings (args keys of tunnel.HTTPSettings).
func ruleIntercept(t *testing.T, s *client.Session, name string, port uint16, local net.Listener, extra map[string][]string, match ...string) error {
	t.Helper()
	args := tunnel.HTTPSettings{Match: parseRules(t, match), PreviewToken: name + "-preview-token-0123456789"}.Args()
	for k, v := range extra {
		args[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := s.CreateIntercept(ctx, client.InterceptSpec{Name: name, Port: port, Mechanism: tunnel.MechanismHTTP, LocalAddr: local.Addr().String(), Args: args})
	return err
}

func do(t *testing.T, rt http.RoundTripper, method, url string, header ...string) string {
	t.Helper()
	return send(t, rt, method, url, "", header...)
}

// send sends one request with body and header pairs (added: a header may
// repeat) and returns who answered: the first word of the answer.
func send(t *testing.T, rt http.RoundTripper, method, url, body string, header ...string) string {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := rt.RoundTrip(req.WithContext(ctx))
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	who, _, _ := strings.Cut(string(b), " ")
	return who
}

// TestHTTPPathMethodAndBaggageRouting: two developers share one team
// header and split the port by path; a third, of another team, takes
// POSTs and PUTs by a baggage member, as a traced app passes it on; every
// other request reaches the app. Over HTTP/1.1 and h2c, through real tunnel sessions.
func TestHTTPPathMethodAndBaggageRouting(t *testing.T) {
	w := startHTTPAgent(t)
	alice, _ := openClient(t, w, "alice@laptop", tunnel.Config{})
	bob, _ := openClient(t, w, "bob@desk", tunnel.Config{})
	carol, _ := openClient(t, w, "carol@host", tunnel.Config{})
	if err := ruleIntercept(t, alice, "api", w.appPort, nameServer(t, "alice"), map[string][]string{tunnel.ArgPathPrefix: {"/api/"}}, "x-team=blue"); err != nil {
		t.Fatal(err)
	}
	if err := ruleIntercept(t, bob, "v2", w.appPort, nameServer(t, "bob"), map[string][]string{tunnel.ArgPathRegex: {`/v2/items/[0-9]+`}}, "x-team=blue"); err != nil {
		t.Fatal(err)
	}
	if err := ruleIntercept(t, carol, "orders", w.appPort, nameServer(t, "carol"), map[string][]string{tunnel.ArgMethod: {"POST", "PUT"}}, "baggage:dev=carol", "x-team=green"); err != nil {
		t.Fatal(err)
	}

	h1 := &http.Transport{}
	defer h1.CloseIdleConnections()
	h2c := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, n, a string, _ *tls.Config) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, n, a)
	}}
	defer h2c.CloseIdleConnections()
	base := "http://" + w.front
	cases := []struct {
		method, path string
		header       []string
		want         string
	}{
		{"GET", "/api/users", []string{"X-Team", "blue"}, "alice"},
		{"GET", "/api/users", nil, "app"},
		{"GET", "/apiary", []string{"X-Team", "blue"}, "app"},
		{"GET", "/v2/items/42", []string{"X-Team", "blue"}, "bob"},
		{"GET", "/v2/items/42/parts", []string{"X-Team", "blue"}, "app"}, // the regex takes the whole path
		{"GET", "/v2/items/x", []string{"X-Team", "blue"}, "app"},
		{"POST", "/orders", []string{"X-Team", "green", "Baggage", "session=9, dev=carol;ttl=1"}, "carol"},
		{"PUT", "/api/orders/1", []string{"X-Team", "green", "Baggage", "a=1", "Baggage", "dev=carol"}, "carol"},
		{"GET", "/orders", []string{"X-Team", "green", "Baggage", "dev=carol"}, "app"},
		{"POST", "/orders", []string{"X-Team", "green", "Baggage", "dev=carol2"}, "app"},
		{"POST", "/orders", []string{"X-Team", "green", "X-Dev", "carol"}, "app"},
	}
	for _, proto := range []struct {
		name string
		rt   http.RoundTripper
	}{{"HTTP/1.1", h1}, {"h2c", h2c}} {
		for _, c := range cases {
			if got := do(t, proto.rt, c.method, base+c.path, c.header...); got != c.want {
				t.Errorf("%s %s %s %v: answered by %q, want %q", proto.name, c.method, c.path, c.header, got, c.want)
			}
		}
	}

	// The list shows the rules to every client.
	list, err := bob.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, ic := range list {
		seen[ic.Name] = fmt.Sprintf("%v %v %s", ic.Match, ic.Methods, ic.Path)
	}
	for name, want := range map[string]string{
		"api":    "[x-team=blue] [] path-prefix=/api/",
		"v2":     "[x-team=blue] [] path-regex=/v2/items/[0-9]+",
		"orders": "[baggage:dev=carol x-team=green] [POST PUT] ",
	} {
		if seen[name] != want {
			t.Errorf("list %s: %q, want %q", name, seen[name], want)
		}
	}
}

// TestHTTPPathConflicts: over the wire, another developer's rules that
// could take the same requests are refused naming the holder, whichever
// rule (path, method) would separate them not being proven.
func TestHTTPPathConflicts(t *testing.T) {
	w := startHTTPAgent(t)
	alice, _ := openClient(t, w, "alice@laptop", tunnel.Config{})
	bob, _ := openClient(t, w, "bob@desk", tunnel.Config{})
	local := nameServer(t, "local")
	if err := ruleIntercept(t, alice, "api", w.appPort, local, map[string][]string{tunnel.ArgPathPrefix: {"/api/"}}, "x-team=blue"); err != nil {
		t.Fatal(err)
	}
	err := ruleIntercept(t, bob, "v2", w.appPort, local, map[string][]string{tunnel.ArgPathRegex: {`/api/v2/.*`}}, "x-team=blue")
	if !errors.Is(err, tunnel.ErrAlreadyIntercepted) || !strings.Contains(err.Error(), "alice@laptop") || !strings.Contains(err.Error(), "path-prefix=/api/") {
		t.Fatalf("a regex inside alice's prefix: %v, want already intercepted naming alice and her path rule", err)
	}
	err = ruleIntercept(t, bob, "bad", w.appPort, local, map[string][]string{tunnel.ArgPathRegex: {`/a)|(.*`}}, "x-team=green")
	if !errors.Is(err, tunnel.ErrBadRequest) {
		t.Fatalf("an expression escaping its anchors: %v, want bad request", err)
	}
	if err := ruleIntercept(t, bob, "web", w.appPort, local, map[string][]string{tunnel.ArgPathPrefix: {"/web/"}}, "x-team=blue"); err != nil {
		t.Fatalf("a diverging prefix: %v", err)
	}
}

// TestHTTPPreviewLinkArmsTheCookieOnAnyPath: with a path rule, the preview
// link's own page may go to the app; the browser is still given the
// cookie, and its requests on the intercepted path then reach the developer.
func TestHTTPPreviewLinkArmsTheCookieOnAnyPath(t *testing.T) {
	w := startHTTPAgent(t)
	alice, _ := openClient(t, w, "alice@laptop", tunnel.Config{})
	if err := ruleIntercept(t, alice, "web", w.appPort, nameServer(t, "alice"), map[string][]string{tunnel.ArgPathPrefix: {"/api/"}}, "x-dev=alice"); err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 5 * time.Second}
	read := func(url string) string {
		resp, err := browser.Get(url)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	base := "http://" + w.front
	if got := read(base + "/?" + tunnel.PreviewQuery + "=web-preview-token-0123456789"); !strings.HasPrefix(got, "app ") || strings.Contains(got, "detour-preview") {
		t.Fatalf("the link's page: got %q, want the app's, the token stripped", got)
	}
	if got := read(base + "/api/x"); !strings.HasPrefix(got, "alice ") {
		t.Fatalf("the browser on the intercepted path: got %q, want alice's process (cookie)", got)
	}
	if got := read(base + "/about"); !strings.HasPrefix(got, "app ") {
		t.Fatalf("the browser elsewhere: got %q, want the app", got)
	}
}
