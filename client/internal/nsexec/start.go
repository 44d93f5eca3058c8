//go:build linux

package nsexec

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// Options say what to run in the namespace.
type Options struct {
	Command []string
	Env     []string // the command's whole environment
	Dir     string
	MTU     int
	// Files are written into the namespace's private directory and
	// bind-mounted read-only over their target path (e.g. resolv.conf
	// over /etc/resolv.conf). The target must exist.
	Files map[string][]byte
	// Trees are shown read-only at their real paths (a pod's volumes).
	Trees []Tree
}

// Namespace is a command running in its own namespaces.
type Namespace struct {
	// TUN is the namespace's TUN device; run the stack on it.
	TUN *os.File
	// Notes are the parts that do not work here (each one line, for the
	// user); the command runs without them.
	Notes []string

	cmd    *exec.Cmd
	ctrl   *net.UnixConn
	dir    string
	socket string
	host   net.Listener // the first process's way to the workstation's 127.0.0.1
	// updates counts UpdateTrees calls (staging names). mu orders them
	// with cleanup: staging after it would make the removed directory
	// again, and leave the copies behind.
	mu      sync.Mutex
	updates int
	cleaned bool
	ended   atomic.Bool // the command has exited (cleanup under way)
	fg      bool
	done    chan struct{}
	status  int
	err     error
}

// capabilities the first process holds in the new namespaces only.
const (
	capNetAdmin = 12
	capSysAdmin = 21
)

// Start creates the namespaces and starts opts.Command in them. The
// errors wrap ErrNoUserNamespaces or ErrNoTUN when the machine cannot do
// it, with the cause and the fix in their text.
func Start(opts Options) (*Namespace, error) {
	if len(opts.Command) == 0 {
		return nil, errors.New("no command to run")
	}
	if opts.MTU == 0 {
		opts.MTU = DefaultMTU
	}
	// $XDG_RUNTIME_DIR is the user's own tmpfs: the staged copies of the
	// pod's files (Secrets among them) never reach a disk there.
	dir, err := os.MkdirTemp(runtimeDir(), "detour-ns-")
	if err != nil {
		return nil, fmt.Errorf("private directory: %w", err)
	}
	n := &Namespace{dir: dir, socket: filepath.Join(dir, "forward.sock"), done: make(chan struct{})}
	if err := n.start(opts); err != nil {
		n.cleanup()
		return nil, err
	}
	go n.wait()
	return n, nil
}

func (n *Namespace) start(opts Options) error {
	cfg := childConfig{Command: opts.Command, Env: opts.Env, Dir: opts.Dir, MTU: opts.MTU, ForwardSocket: n.socket,
		HostSocket: filepath.Join(n.dir, "host.sock")}
	host, err := net.Listen("unix", cfg.HostSocket)
	if err != nil {
		return fmt.Errorf("host socket: %w", err)
	}
	n.host = host
	go serveHost(host)
	i := 0
	for target, content := range opts.Files {
		i++ // by index: two targets with one base name must not share a file
		src := filepath.Join(n.dir, fmt.Sprintf("file-%d-%s", i, filepath.Base(target)))
		if err := os.WriteFile(src, content, 0o644); err != nil {
			return fmt.Errorf("write %s for the namespace: %w", target, err)
		}
		cfg.Binds = append(cfg.Binds, Bind{Source: src, Target: target})
	}
	trees, err := stageTrees(n.dir, opts.Trees)
	if err != nil {
		return fmt.Errorf("stage the pod's files: %w", err)
	}
	cfg.Trees, cfg.Scratch = trees, filepath.Join(n.dir, "scratch")
	ctrl, childEnd, err := socketpair()
	if err != nil {
		return err
	}
	n.ctrl = ctrl
	self, err := os.Executable()
	if err != nil {
		childEnd.Close()
		return fmt.Errorf("find detour's own binary: %w", err)
	}
	uid, gid := os.Getuid(), os.Getgid()
	cmd := exec.Command(self)
	cmd.Args = []string{"detour-namespace"}
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{childEnd}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}},
		AmbientCaps: []uintptr{capNetAdmin, capSysAdmin},
		Pdeathsig:   syscall.SIGKILL,
	}
	// In a terminal, the command's process group becomes the foreground
	// one: Ctrl-C then reaches the command (once), not detour.
	n.fg = ForegroundInTerminal(cmd.SysProcAttr)
	err = cmd.Start()
	childEnd.Close()
	if err != nil {
		return cloneError(err)
	}
	defer func() {
		if n.cmd == nil && n.TUN != nil { // failed after the TUN came
			n.Close()
		}
	}()
	n.cmd = cmd
	if err := sendMsg(ctrl, ctrlMsg{Kind: "config", Config: &cfg}, -1); err != nil {
		n.kill()
		return fmt.Errorf("configure the namespace: %w", err)
	}
	return n.handshake()
}

// handshake waits for the TUN and for the command to start.
func (n *Namespace) handshake() error {
	for {
		m, f, err := recvMsg(n.ctrl)
		if err != nil {
			n.kill()
			return fmt.Errorf("the namespace's first process ended before the command started: %w", err)
		}
		switch m.Kind {
		case "tun":
			if f == nil {
				n.kill()
				return fmt.Errorf("the namespace sent no TUN descriptor: %w", ErrNoTUN)
			}
			n.TUN = f
		case "note":
			n.Notes = append(n.Notes, m.Error)
		case "error":
			n.kill()
			return remoteError(m)
		case "started":
			if n.TUN == nil {
				n.kill()
				return fmt.Errorf("the command started without a TUN: %w", ErrNoTUN)
			}
			return nil
		}
	}
}

func (n *Namespace) kill() {
	if n.cmd != nil && n.cmd.Process != nil {
		_ = n.cmd.Process.Kill()
		_ = n.cmd.Wait()
		n.cmd = nil
	}
}

func (n *Namespace) wait() {
	err := n.cmd.Wait()
	n.ended.Store(true)
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		n.status = ee.ExitCode()
		if n.status < 0 { // killed by a signal
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				n.status = 128 + int(ws.Signal())
			}
		}
	case err != nil:
		n.err = err
	}
	if n.fg {
		ReclaimTerminal()
	}
	n.cleanup()
	close(n.done)
}

// Done is closed when the command (and with it every process of the
// namespace) has ended.
func (n *Namespace) Done() <-chan struct{} { return n.done }

// Wait returns the command's exit status (128+N when signal N ended it).
func (n *Namespace) Wait() (int, error) {
	<-n.done
	return n.status, n.err
}

// Signal passes sig on to the command.
func (n *Namespace) Signal(sig syscall.Signal) error {
	return sendMsg(n.ctrl, ctrlMsg{Kind: "signal", Signal: int(sig)}, -1)
}

// DialLoopback connects to 127.0.0.1:port inside the namespace (where the
// command listens); ErrNothingListens when nothing does.
func (n *Namespace) DialLoopback(ctx context.Context, port uint16) (net.Conn, error) {
	return dialForward(ctx, n.socket, port)
}

// UpdateTrees gives trees already shown (the same targets as Options.Trees)
// new contents: a refreshed service-account token, a changed ConfigMap.
// The first process applies them in the background; what it cannot apply
// it reports on stderr. Only directory trees change: a file mounted alone
// (SingleFile, a subPath mount) keeps what it showed first, as in the pod,
// where the kubelet never updates subPath mounts.
func (n *Namespace) UpdateTrees(trees []Tree) error {
	dirs := slices.DeleteFunc(slices.Clone(trees), func(t Tree) bool { return t.SingleFile })
	if len(dirs) == 0 {
		return nil
	}
	err := n.sendUpdate(dirs)
	if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
		// The first process closed its end: it is ending, and detour reaps
		// it in a moment. Its end, not the update, is what happened.
		select {
		case <-n.done:
			return nil
		case <-time.After(endingGrace):
		}
	}
	if err != nil {
		return fmt.Errorf("update the pod's files in the namespace: %w", err)
	}
	return nil
}

// endingGrace is how long an update that found the first process's socket
// closed waits for it to be reaped before it counts as a failure.
const endingGrace = 5 * time.Second

func (n *Namespace) sendUpdate(trees []Tree) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cleaned {
		return nil // the command is gone: there is nothing to update
	}
	n.updates++
	staged, err := stageTreesAs(n.dir, fmt.Sprintf("update-%d-", n.updates), trees)
	if err == nil {
		err = sendMsg(n.ctrl, ctrlMsg{Kind: "update", Update: staged}, -1)
	}
	if n.ended.Load() {
		return nil // it ended meanwhile; cleanup removes what was staged
	}
	return err
}

// Kill ends the command and every process in its namespace.
func (n *Namespace) Kill() {
	if n.cmd != nil && n.cmd.Process != nil {
		_ = n.cmd.Process.Kill()
	}
	<-n.done
}

// Close releases the TUN; call it once the stack on it has stopped.
func (n *Namespace) Close() {
	if n.TUN != nil {
		_ = n.TUN.Close()
	}
}

func (n *Namespace) cleanup() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cleaned = true
	if n.host != nil {
		_ = n.host.Close()
	}
	if n.ctrl != nil {
		_ = n.ctrl.Close()
	}
	_ = os.RemoveAll(n.dir)
}

func tcsetpgrp(fd, pgrp int) error { return unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, pgrp) }

func ignoreTTOU(f func()) {
	signal.Ignore(syscall.SIGTTOU)
	defer signal.Reset(syscall.SIGTTOU)
	f()
}

// ForegroundInTerminal sets attr so that, when stdin is a terminal, the
// command starts in its own process group and that group becomes the
// terminal's foreground one: the terminal's Ctrl-C (SIGINT), Ctrl-\ and
// SIGWINCH then reach the command — once — and not detour, which would
// otherwise pass them on a second time. It reports whether it did; call
// ReclaimTerminal once the command has ended.
func ForegroundInTerminal(attr *syscall.SysProcAttr) bool {
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return false
	}
	attr.Setpgid, attr.Foreground, attr.Ctty = true, true, int(os.Stdin.Fd())
	return true
}

// ReclaimTerminal makes detour's process group the terminal's foreground
// group again after the command's ended.
func ReclaimTerminal() {
	fd := int(os.Stdin.Fd())
	pgrp := syscall.Getpgrp()
	// A background group calling tcsetpgrp gets SIGTTOU unless it ignores it.
	ignoreTTOU(func() { _ = tcsetpgrp(fd, pgrp) })
}

// runtimeDir is $XDG_RUNTIME_DIR when it is a directory of this user's,
// else "" (the system's temporary directory).
func runtimeDir() string {
	d := os.Getenv("XDG_RUNTIME_DIR")
	fi, err := os.Stat(d)
	if d == "" || err != nil || !fi.IsDir() {
		return ""
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Getuid() {
		return ""
	}
	return d
}
