package netnstest

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/tunnel"
)

// TestMirrorsInRedirectMode: with the nftables redirect really applied, a
// tcp-mirror and an http-mirror of one port get copies of what a cluster
// client sends — the raw connection, and the request — while the app
// answers it, and both count the copy.
func TestMirrorsInRedirectMode(t *testing.T) {
	p := startPod(t, podOptions{redirect: true})
	ctx := context.Background()

	requests := make(chan string, 8)
	httpCopies := listen(t, "", "127.0.0.1:0")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/detour-http2-check" && r.Method != "PRI" { // the agent's probes of the local process
			requests <- r.Method + " " + r.URL.Path
		}
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(httpCopies)
	t.Cleanup(func() { srv.Close() })

	conns := make(chan string, 8)
	tcpCopies := listen(t, "", "127.0.0.1:0")
	go func() {
		for {
			c, err := tcpCopies.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				conns <- string(b)
			}()
		}
	}()

	bob := p.session(t, "bob@desk", tunnel.Config{})
	carol := p.session(t, "carol@home", tunnel.Config{})
	for _, m := range []struct {
		s     *client.Session
		mech  string
		local net.Listener
	}{{bob, tunnel.MechanismHTTPMirror, httpCopies}, {carol, tunnel.MechanismTCPMirror, tcpCopies}} {
		if _, err := m.s.CreateIntercept(ctx, client.InterceptSpec{Name: "tap", Port: appHTTP, Mechanism: m.mech, LocalAddr: m.local.Addr().String()}); err != nil {
			t.Fatal(err)
		}
	}
	if got := p.get(appHTTP); got != "app" {
		t.Fatalf("mirrored port: answered %q, want the app", got)
	}
	for what, ch := range map[string]chan string{"request": requests, "connection": conns} {
		select {
		case got := <-ch:
			if !strings.HasPrefix(got, "GET /") {
				t.Errorf("the %s copy: %q, want the cluster client's GET /", what, got)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s copy reached the workstation", what)
		}
	}
	for _, s := range []*client.Session{bob, carol} {
		eventually(t, 5*time.Second, "the copy counted", func() bool {
			list, err := s.List(ctx)
			if err != nil {
				return false
			}
			for _, ic := range list {
				if ic.Yours && ic.MirrorCopied == 1 && ic.MirrorDropped == 0 {
					return true
				}
			}
			return false
		})
	}
}
