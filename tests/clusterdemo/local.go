package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// buildLocal builds "your local version" of the app: the sample app's own
// code (tests/images/echo), for this machine.
func buildLocal(ctx context.Context, repo, out string) error {
	fmt.Printf("    $ go build -o %s ./tests/images/echo\n", out)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, "./tests/images/echo")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build the local version: %w: %s", err, b)
	}
	return nil
}

// freePort is a port nothing on this machine's 127.0.0.1 listens on now.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// background is a detour command left running, as in a second terminal:
// its output is printed indented as it comes, and kept.
type background struct {
	cmd  *exec.Cmd
	done chan error
	mu   sync.Mutex
	out  bytes.Buffer
	line []byte // a line not yet ended
}

// start runs detour ARGS in the background.
func (c *cli) start(args ...string) (*background, error) {
	fmt.Printf("    $ detour %s\n", shellJoin(args))
	b := &background{cmd: exec.Command(c.bin, args...), done: make(chan error, 1)}
	b.cmd.Env = append(os.Environ(), c.env...)
	b.cmd.Stdout, b.cmd.Stderr = b, b
	if err := b.cmd.Start(); err != nil {
		return nil, fmt.Errorf("detour %s: %w", args[0], err)
	}
	go func() { b.done <- b.cmd.Wait() }()
	return b, nil
}

// Write prints and keeps whole lines (stdout and stderr both come here).
func (b *background) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.out.Write(p)
	b.line = append(b.line, p...)
	for {
		i := bytes.IndexByte(b.line, '\n')
		if i < 0 {
			return len(p), nil
		}
		if i > 0 {
			fmt.Println("      " + string(b.line[:i]))
		}
		b.line = b.line[i+1:]
	}
}

func (b *background) output() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.out.String()
}

// waitOutput waits until the output contains s; the command exiting first
// is an error.
func (b *background) waitOutput(ctx context.Context, s string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for !strings.Contains(b.output(), s) {
		select {
		case err := <-b.done:
			b.done <- err
			return fmt.Errorf("detour %s exited (%v) before printing %q", b.cmd.Args[1], err, s)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("detour %s did not print %q within %s", b.cmd.Args[1], s, within)
		}
	}
	return nil
}

// interrupt sends SIGINT, as Ctrl-C in its terminal would, and waits for
// the command to end (killing it after 30 s).
func (b *background) interrupt() error {
	if err := b.cmd.Process.Signal(syscall.SIGINT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case err := <-b.done:
		b.done <- err
		return err
	case <-time.After(30 * time.Second):
		_ = b.cmd.Process.Kill()
		return errors.New("it did not stop within 30 s after SIGINT; killed")
	}
}

// localName is what the local version calls itself in its answers.
const localName = "your laptop"

// localCommand is the CMD of the intercept: the local build, serving on
// the intercept's local port inside its namespace. POD_NAME names it in its
// answers; STORE_URL comes with the app's environment, from the pod.
func localCommand(bin string, port int) []string {
	return []string{"env", "POD_NAME=" + localName, fmt.Sprintf("HTTP_ADDR=127.0.0.1:%d", port), "TCP_ADDR=127.0.0.1:0", bin}
}

// shellJoin prints args as a shell would need them typed.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = a
		if a == "" || strings.ContainsAny(a, " \t'\"$\\*?;&|<>()`") {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}

// demoDir is where the demo keeps the local build: with the cluster's
// state, removed by make cluster-down.
func demoDir(stateDir string) (string, error) {
	d := filepath.Join(stateDir, "demo")
	return d, os.MkdirAll(d, 0o755)
}
