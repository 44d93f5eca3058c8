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

	"github.com/detour-dev/detour/agent"
	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/tunnel"
	"golang.org/x/net/http2"
)

// nameServer answers every request with its name and the path, over
// HTTP/1.1 and h2c.
func nameServer(t *testing.T, name string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s %s", name, r.Proto, r.URL.RequestURI())
	}), Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln
}

func startHTTPAgent(t *testing.T) *world {
	t.Helper()
	app := nameServer(t, "app")
	appPort := uint16(app.Addr().(*net.TCPAddr).Port)
	return startAgent(t, func(c *agent.Config) {
		c.Listeners = []agent.PortMap{{Listen: freePort(t), App: appPort}}
	})
}

func get(t *testing.T, rt http.RoundTripper, url string, header ...string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := rt.RoundTrip(req.WithContext(ctx))
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("status %d: %s", resp.StatusCode, b)
	}
	return string(b)
}

func httpIntercept(t *testing.T, s *client.Session, name string, port uint16, local net.Listener, match ...string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := s.CreateIntercept(ctx, client.InterceptSpec{
		Name: name, Port: port, Mechanism: tunnel.MechanismHTTP, LocalAddr: local.Addr().String(),
		Args: tunnel.HTTPSettings{Match: parseRules(t, match), PreviewToken: name + "-preview-token-0123456789"}.Args(),
	})
	return err
}

func parseRules(t *testing.T, rules []string) []tunnel.HeaderMatch {
	var out []tunnel.HeaderMatch
	for _, r := range rules {
		m, err := tunnel.ParseHeaderMatch(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func TestHTTPInterceptsRouteEachRequestByHeader(t *testing.T) {
	w := startHTTPAgent(t)
	alice, _ := openClient(t, w, "alice@laptop", tunnel.Config{})
	bob, _ := openClient(t, w, "bob@desk", tunnel.Config{})
	if err := httpIntercept(t, alice, "web", w.appPort, nameServer(t, "alice"), "X-Dev=alice"); err != nil {
		t.Fatal(err)
	}
	if err := httpIntercept(t, bob, "web-bob", w.appPort, nameServer(t, "bob"), "x-dev=bob", "x-team=blue"); err != nil { // its own name: the helper derives the preview token from it, one owner's each
		t.Fatal(err)
	}

	h1 := &http.Transport{}
	defer h1.CloseIdleConnections()
	h2c := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, n, a string, _ *tls.Config) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, n, a)
	}}
	defer h2c.CloseIdleConnections()
	url := "http://" + w.front + "/p?q=1"
	for _, tc := range []struct {
		proto  string
		rt     http.RoundTripper
		header []string
		want   string
	}{
		{"HTTP/1.1", h1, nil, "app HTTP/1.1 /p?q=1"},
		{"HTTP/1.1", h1, []string{"x-dev", "alice"}, "alice HTTP/1.1 /p?q=1"},
		{"HTTP/1.1", h1, []string{"x-dev", "bob"}, "app HTTP/1.1 /p?q=1"}, // bob's rules need both headers
		{"HTTP/1.1", h1, []string{"x-dev", "bob", "X-Team", "blue"}, "bob HTTP/1.1 /p?q=1"},
		{"HTTP/2.0", h2c, nil, "app HTTP/1.1 /p?q=1"}, // HTTP/2 rows check only who answered (below)
		{"HTTP/2.0", h2c, []string{"x-dev", "alice"}, "alice"},
	} {
		got := get(t, tc.rt, url, tc.header...)
		if tc.proto == "HTTP/2.0" {
			// Whichever protocol the agent picked towards each side, the
			// request must land where its header says.
			if !strings.HasPrefix(got, strings.Fields(tc.want)[0]+" ") {
				t.Errorf("%s %v: got %q, want it answered by %s", tc.proto, tc.header, got, strings.Fields(tc.want)[0])
			}
			continue
		}
		if got != tc.want && !strings.HasPrefix(got, strings.Fields(tc.want)[0]+" HTTP/2.0 /p?q=1") {
			t.Errorf("%s %v: got %q, want %q", tc.proto, tc.header, got, tc.want)
		}
	}
}

func TestHTTPPreviewTokenBecomesACookie(t *testing.T) {
	w := startHTTPAgent(t)
	alice, _ := openClient(t, w, "alice@laptop", tunnel.Config{})
	if err := httpIntercept(t, alice, "web", w.appPort, nameServer(t, "alice"), "x-dev=alice"); err != nil {
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
	if got := read(base + "/?a=1&" + tunnel.PreviewQuery + "=web-preview-token-0123456789"); !strings.HasPrefix(got, "alice ") || !strings.HasSuffix(got, " /?a=1") {
		t.Fatalf("link with the token: got %q, want alice's process, token stripped from the query", got)
	}
	if got := read(base + "/next"); !strings.HasPrefix(got, "alice ") {
		t.Fatalf("next page in the same browser: got %q, want alice's process (cookie)", got)
	}
	if got := get(t, &http.Transport{}, base+"/next"); !strings.HasPrefix(got, "app ") {
		t.Fatalf("another browser: got %q, want the app", got)
	}
}

func TestHTTPInterceptErrors(t *testing.T) {
	w := startHTTPAgent(t)
	ctx := context.Background()
	alice, _ := openClient(t, w, "alice@laptop", tunnel.Config{})
	bob, _ := openClient(t, w, "bob@desk", tunnel.Config{})
	local := nameServer(t, "local")
	if err := httpIntercept(t, alice, "web", w.appPort, local, "x-dev=alice"); err != nil {
		t.Fatal(err)
	}
	err := httpIntercept(t, bob, "web", w.appPort, local, "X-DEV=alice")
	if !errors.Is(err, tunnel.ErrAlreadyIntercepted) || !strings.Contains(err.Error(), "alice@laptop") {
		t.Errorf("same rules as alice: got %v, want already intercepted naming alice@laptop", err)
	}
	_, err = bob.CreateIntercept(ctx, client.InterceptSpec{Name: "all", Port: w.appPort, Mechanism: tunnel.MechanismTCP, LocalAddr: local.Addr().String()})
	if !errors.Is(err, tunnel.ErrAlreadyIntercepted) || !strings.Contains(err.Error(), "personal (http) intercepts by alice@laptop") {
		t.Errorf("tcp over http: got %v", err)
	}
	_, err = bob.CreateIntercept(ctx, client.InterceptSpec{Name: "x", Port: w.appPort, Mechanism: tunnel.MechanismHTTP, LocalAddr: local.Addr().String(), Args: map[string][]string{"match": {"nonsense"}}})
	if !errors.Is(err, tunnel.ErrBadRequest) || !strings.Contains(err.Error(), "want NAME=VALUE") {
		t.Errorf("malformed match: got %v", err)
	}

	// A Service port that says https, on a pod with no TLS Secret: the agent
	// could not read the requests, and says what to add.
	// (A port's protocol is settled by its first http intercept: a fresh agent.)
	hw := startHTTPAgent(t)
	dave, _ := openClient(t, hw, "dave@host", tunnel.Config{})
	carolRules := parseRules(t, []string{"x-dev=https"})
	_, err = dave.CreateIntercept(ctx, client.InterceptSpec{Name: "tls", Port: hw.appPort, Mechanism: tunnel.MechanismHTTP, LocalAddr: local.Addr().String(),
		Args: tunnel.HTTPSettings{Match: carolRules, AppProtocol: "https"}.Args()})
	if !errors.Is(err, tunnel.ErrBadRequest) || !strings.Contains(err.Error(), "detour.dev/terminating-tls-secret") {
		t.Errorf("https without a certificate: got %v, want an error naming the annotation", err)
	}

	// A port whose app speaks no HTTP is refused after the probe.
	tw := startAgent(t, nil) // its app is a line server
	carol, _ := openClient(t, tw, "carol@host", tunnel.Config{})
	start := time.Now()
	err = httpIntercept(t, carol, "lines", tw.appPort, local, "x-dev=carol")
	if !errors.Is(err, tunnel.ErrAppNotHTTP) || !strings.Contains(err.Error(), "--mechanism tcp") {
		t.Errorf("non-HTTP app: got %v, want app-not-HTTP advising tcp", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("probe took %s, bound is 2 s per attempt", took)
	}
}

func TestHTTPClientDeathGives502ThenApp(t *testing.T) {
	w := startHTTPAgent(t)
	alice, conn := openClient(t, w, "alice@laptop", tunnel.Config{})
	// alice's process takes the request and never answers.
	stuck := make(chan struct{})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-stuck })}
	go srv.Serve(ln)
	defer func() { close(stuck); srv.Close() }()
	if err := httpIntercept(t, alice, "web", w.appPort, ln, "x-dev=alice"); err != nil {
		t.Fatal(err)
	}
	result := make(chan string, 1)
	go func() { result <- get(t, &http.Transport{}, "http://"+w.front+"/", "x-dev", "alice") }()
	time.Sleep(300 * time.Millisecond)
	conn.Close() // the workstation vanishes mid-request
	select {
	case got := <-result:
		if !strings.HasPrefix(got, "status 502") {
			t.Fatalf("in-flight request: got %q, want 502", got)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("in-flight request hung after the client died")
	}
	eventually(t, 3*time.Second, "alice's header reaches the app again", func() bool {
		return strings.HasPrefix(get(t, &http.Transport{}, "http://"+w.front+"/", "x-dev", "alice"), "app ")
	})
}
