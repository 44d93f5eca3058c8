//go:build !linux

package nsexec

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"syscall"
)

// Options say what to run in the namespace.
type Options struct {
	Command []string
	Env     []string
	Dir     string
	MTU     int
	Files   map[string][]byte
	Trees   []Tree
}

// Tree is a read-only directory of files (or one file) shown at Target.
type Tree struct {
	Target     string
	Files      map[string]TreeFile
	SingleFile bool
}

// TreeFile is one file's content and mode.
type TreeFile struct {
	Data []byte
	Mode os.FileMode
}

// Namespace is not available on this system.
type Namespace struct {
	TUN   *os.File
	Notes []string
}

// IsChild is false off Linux.
func IsChild() bool { return false }

// ChildMain is never called off Linux.
func ChildMain() int { return 125 }

// Start explains that this needs Linux.
func Start(Options) (*Namespace, error) {
	return nil, fmt.Errorf("%s has no unprivileged network namespaces: %w", runtime.GOOS, ErrUnsupported)
}

func (n *Namespace) Done() <-chan struct{}       { return nil }
func (n *Namespace) Wait() (int, error)          { return 0, ErrUnsupported }
func (n *Namespace) Signal(syscall.Signal) error { return ErrUnsupported }
func (n *Namespace) DialLoopback(context.Context, uint16) (net.Conn, error) {
	return nil, ErrUnsupported
}
func (n *Namespace) Kill()                    {}
func (n *Namespace) UpdateTrees([]Tree) error { return ErrUnsupported }
func (n *Namespace) Close()                   {}

// ForegroundInTerminal does nothing off Linux.
func ForegroundInTerminal(*syscall.SysProcAttr) bool { return false }

// ReclaimTerminal does nothing off Linux.
func ReclaimTerminal() {}
