package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/detour-dev/detour/client/internal/poll"
)

// ErrNotRunning means no daemon answers on the socket.
var ErrNotRunning = errors.New("the detour daemon is not running")

// APIClient talks to the daemon over its unix socket.
type APIClient struct {
	socket string
	http   *http.Client
}

// NewAPIClient returns a client for the daemon at socket.
func NewAPIClient(socket string) *APIClient {
	return &APIClient{socket: socket, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}}
}

// Running says whether a daemon answers.
func (c *APIClient) Running(ctx context.Context) bool {
	_, err := c.Status(ctx)
	return err == nil
}

// EnsureRunning starts the daemon (the running binary with args) if none
// answers, and waits for it. Its output goes to logPath.
func (c *APIClient) EnsureRunning(ctx context.Context, args []string, logPath string) error {
	if c.Running(ctx) {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
		return err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open daemon log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session: the daemon outlives this command and its terminal.
	detach(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}
	_ = cmd.Process.Release()
	_, timedOut, _ := poll.Until(ctx, 50*time.Millisecond, 10*time.Second, nil, func(ctx context.Context) (bool, string, error) {
		return c.Running(ctx), "", nil
	})
	if timedOut {
		return fmt.Errorf("the daemon did not start within 10s: see %s", logPath)
	}
	return nil
}

func (c *APIClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://detour"+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err() // the caller gave up (Ctrl-C): the daemon may be fine
		}
		return fmt.Errorf("%w (socket %s): %w", ErrNotRunning, c.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e ErrorReply
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("daemon answered %s", resp.Status)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

// Create asks the daemon to hold an intercept; it returns once active.
func (c *APIClient) Create(ctx context.Context, req InterceptRequest) (InterceptStatus, error) {
	var st InterceptStatus
	err := c.do(ctx, http.MethodPost, "/v1/intercepts", req, &st)
	return st, err
}

// Leave removes an intercept.
func (c *APIClient) Leave(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/intercepts/"+name, nil, nil)
}

// Status returns every intercept the daemon holds.
func (c *APIClient) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st, err
}

// Quit leaves every intercept and stops the daemon.
func (c *APIClient) Quit(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/quit", nil, nil)
}
