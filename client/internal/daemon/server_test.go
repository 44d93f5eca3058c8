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
	d := New(zaptest.NewLogger(t))
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
	if _, err := c.Create(ctx, InterceptRequest{Name: "x", Kubeconfig: filepath.Join(t.TempDir(), "missing")}); err == nil || !strings.Contains(err.Error(), "kubeconfig") {
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
