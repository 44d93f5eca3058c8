package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// health holds the readiness probes of the components.
type health struct {
	ctx context.Context
	cfg Config
}

// netnsGet probes a URL that only exists inside the netns (loopback there),
// with curl entered into the netns.
func (h *health) netnsGet(url, want string) func() error {
	return func() error {
		ctx, cancel := context.WithTimeout(h.ctx, 3*time.Second)
		defer cancel()
		out, err := inNetns(ctx, "curl", "-sfk", "--max-time", "2", url)
		if err != nil {
			return err
		}
		if want != "" && !strings.Contains(out, want) {
			return fmt.Errorf("%s answered %q", url, out)
		}
		return nil
	}
}

func (h *health) apiserverReady() error {
	ca, err := os.ReadFile(h.cfg.pki("ca.crt"))
	if err != nil {
		return fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	resp, err := c.Get(fmt.Sprintf("https://%s:%d/readyz", NodeIP, APIServerPort))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("readyz: %s", resp.Status)
	}
	return nil
}

func (h *health) containerdReady() error {
	ctx, cancel := context.WithTimeout(h.ctx, 3*time.Second)
	defer cancel()
	_, err := sh(ctx, "ctr", "--address", h.cfg.ContainerdSocket(), "version")
	return err
}

// pidOf reads a component's pid file and says whether that process is still
// the component (its executable is the component's binary).
func pidOf(cfg Config, c component) (int, bool) {
	b, err := os.ReadFile(cfg.pidFile(c.name))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, false
	}
	return pid, isProcess(pid, c.bin)
}

// isProcess reports whether pid runs bin (or is still the nsenter that is
// about to exec it).
func isProcess(pid int, bin string) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return false
	}
	exe = strings.TrimSuffix(exe, " (deleted)")
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		if i := strings.LastIndexByte(string(stat), ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			return false // zombie
		}
	}
	return exe == bin || filepath.Base(exe) == "nsenter"
}

// start runs a component inside the netns, detached from this process, and
// records its PID (nsenter --net execs the binary, so the PID is the
// daemon's own).
func start(cfg Config, c component) (int, error) {
	for _, d := range []string{filepath.Dir(cfg.logFile(c.name)), filepath.Dir(cfg.pidFile(c.name))} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return 0, fmt.Errorf("create %s: %w", d, err)
		}
	}
	logf, err := os.OpenFile(cfg.logFile(c.name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, fmt.Errorf("open log: %w", err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== detour cluster: starting %s at %s\n", c.name, time.Now().Format(time.RFC3339))
	cmd := exec.Command("nsenter", append([]string{"--net=" + NetnsPath, c.bin}, c.args...)...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Dir = cfg.StateDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", c.name, err)
	}
	pid := cmd.Process.Pid
	if err := os.WriteFile(cfg.pidFile(c.name), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return pid, fmt.Errorf("write pid file: %w", err)
	}
	// Reap it if it dies while this process still runs, so that a crash
	// shows as "not running" rather than as a zombie.
	go func() { _ = cmd.Wait() }()
	return pid, nil
}

// waitReady polls the component's probe until it answers or the process dies.
func waitReady(ctx context.Context, log *zap.Logger, cfg Config, c component, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if _, alive := pidOf(cfg, c); !alive {
			return fmt.Errorf("%s exited; see %s: %w", c.name, cfg.logFile(c.name), tail(cfg.logFile(c.name)))
		}
		if last = c.ready(); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s (log %s): %w", c.name, timeout, cfg.logFile(c.name), last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// tail returns the last lines of a log as an error, for failure messages.
func tail(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return errors.New(strings.Join(lines, "\n"))
}

// stop sends SIGTERM to a recorded process, then SIGKILL after grace.
func stopPID(pid int, match func() bool, grace time.Duration) {
	if !match() {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !match() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 50 && match(); i++ {
		time.Sleep(100 * time.Millisecond)
	}
}
