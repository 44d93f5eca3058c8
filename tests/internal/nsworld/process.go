package nsworld

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a program running inside a namespace, with its output kept.
type Process struct {
	Cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
	// killed: ended by Kill, so its exit status is no failure.
	killed bool
}

type lockedWriter struct{ p *Process }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

// Start runs name inside ns. extraOut, if not nil, also gets the output.
func Start(ns string, extraOut io.Writer, name string, args ...string) (*Process, error) {
	p := &Process{done: make(chan struct{})}
	p.Cmd = Command(context.Background(), ns, name, args...)
	var w io.Writer = lockedWriter{p}
	if extraOut != nil {
		w = io.MultiWriter(w, extraOut)
	}
	p.Cmd.Stdout, p.Cmd.Stderr = w, w
	if err := p.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", name, ns, err)
	}
	go func() {
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Output returns what the process printed so far.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Stop sends SIGTERM and waits up to d, then kills. It returns the exit error.
func (p *Process) Stop(d time.Duration) error {
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(d):
		_ = p.Cmd.Process.Kill()
		<-p.done
	}
	return p.err
}

// Kill sends SIGKILL: no goodbye, no cleanup, as a crash would.
func (p *Process) Kill() {
	p.mu.Lock()
	p.killed = true
	p.mu.Unlock()
	_ = p.Cmd.Process.Kill()
	<-p.done
}

// Killed reports whether Kill ended the process.
func (p *Process) Killed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.killed
}

// RSS returns the resident set size in bytes, from /proc (for nsenter'd
// programs, of the program itself: nsenter execs it in place).
func (p *Process) RSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", p.Cmd.Process.Pid)
}

// WaitHTTP polls url from inside ns until it answers 200, the process
// exits, or d passes.
func (p *Process) WaitHTTP(ns, url string, d time.Duration) error {
	client := &http.Client{Transport: &http.Transport{DialContext: Dialer(ns), DisableKeepAlives: true}, Timeout: time.Second}
	deadline := time.Now().Add(d)
	for {
		select {
		case <-p.done:
			return fmt.Errorf("exited before ready (%v):\n%s", p.err, p.Output())
		default:
		}
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready at %s within %s (last error %v):\n%s", url, d, err, p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
