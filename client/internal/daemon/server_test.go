package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// TestAPIOverUnixSocket: status, leave of an unknown intercept, and quit,
// through the real socket and HTTP API the CLI uses.
func TestAPIOverUnixSocket(t *testing.T) {
	dir := t.TempDir()
	if _, err := Listen(filepath.Join(dir, "daemon.sock")); err == nil || !strings.Contains(err.Error(), "chmod 700") {
		t.Fatalf("socket in a directory others can read: %v", err)
	}
	os.Chmod(dir, 0o700)
	sock := filepath.Join(dir, "daemon.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	if _, err := Listen(sock); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second daemon on the same socket: %v", err)
	}
	d := New(zaptest.NewLogger(t), DefaultSessionLinger)
	done := make(chan error, 1)
	go func() { done <- d.Run(context.Background(), ln) }()

	c := NewAPIClient(sock)
	ctx := context.Background()
	st, err := c.Status(ctx)
	if err != nil || len(st.Intercepts) != 0 || st.PID == 0 {
		t.Fatalf("status = %+v, %v", st, err)
	}
	if err := c.Leave(ctx, "hello"); err == nil || !strings.Contains(err.Error(), `no intercept named "hello"`) {
		t.Fatalf("leave unknown: %v", err)
	}
	if _, err := c.Create(ctx, InterceptRequest{Name: "x"}); err == nil || !strings.Contains(err.Error(), "no port") {
		t.Fatalf("create without a port: %v", err)
	}
	port := []PortRequest{{Port: 80, AppPort: 8080, LocalAddr: "127.0.0.1:8080"}}
	if _, err := c.Create(ctx, InterceptRequest{Name: "x", Ports: port, Kubeconfig: filepath.Join(t.TempDir(), "missing")}); err == nil || !strings.Contains(err.Error(), "kubeconfig") {
		t.Fatalf("create with a missing kubeconfig: %v", err)
	}
	if err := c.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("daemon did not stop after quit")
	}
	if c.Running(ctx) {
		t.Fatal("daemon still answers after quit")
	}
	if _, err := c.Status(ctx); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("status after quit: %v", err)
	}
}

func TestValidRequest(t *testing.T) {
	ports := func(apps ...uint16) []PortRequest {
		var ps []PortRequest
		for _, a := range apps {
			ps = append(ps, PortRequest{Port: int32(a), AppPort: a, LocalAddr: "127.0.0.1:1"})
		}
		return ps
	}
	long := strings.Repeat("a", 250)
	cases := []struct {
		name string
		req  InterceptRequest
		held []InterceptRequest
		want string // "" for valid
	}{
		{"one port", InterceptRequest{Name: "hello", Ports: ports(8080)}, nil, ""},
		{"two ports", InterceptRequest{Name: "hello", Ports: ports(8080, 9090)}, nil, ""},
		{"no port", InterceptRequest{Name: "hello"}, nil, "no port"},
		{"an app port twice", InterceptRequest{Name: "hello", Ports: ports(8080, 8080)}, nil, "container port 8080 twice"},
		// The first port's agent name is the name itself: 250 bytes is a
		// valid name; the second port's (name.9090) is not.
		{"one port, long name", InterceptRequest{Name: long, Ports: ports(8080)}, nil, ""},
		{"second port's name too long", InterceptRequest{Name: long, Ports: ports(8080, 9090)}, nil, "port 9090"},
		{"clashes with another's second port", InterceptRequest{Name: "hello.9090", Ports: ports(7070)},
			[]InterceptRequest{{Name: "hello", Ports: ports(8080, 9090)}}, `"hello.9090", which intercept "hello" already uses`},
		{"another's first port clashes with our second", InterceptRequest{Name: "hello", Ports: ports(8080, 9090)},
			[]InterceptRequest{{Name: "hello.9090", Ports: ports(7070)}}, `which intercept "hello.9090" already uses`},
		{"re-creating the same name replaces it", InterceptRequest{Name: "hello", Ports: ports(8080, 9090)},
			[]InterceptRequest{{Name: "hello", Ports: ports(8080, 9090)}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := validRequest(c.req, c.held)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("valid, got %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
}

func TestAgentNames(t *testing.T) {
	req := InterceptRequest{Name: "hello", Ports: []PortRequest{{AppPort: 9090}, {AppPort: 8080}}}
	if got := req.AgentNames(); len(got) != 2 || got[0] != "hello" || got[1] != "hello.8080" {
		t.Fatalf("agent names %q, want [hello hello.8080]", got)
	}
}
