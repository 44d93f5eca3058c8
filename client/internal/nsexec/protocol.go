//go:build linux

package nsexec

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// childEnv marks the re-executed binary as the namespace's first process.
const childEnv = "DETOUR_NSEXEC_CHILD"

// ctrlFD is the control socket's descriptor in the child (ExtraFiles[0]).
const ctrlFD = 3

// childConfig is what the first process is told to set up.
type childConfig struct {
	Command []string `json:"command"`
	Env     []string `json:"env"`
	Dir     string   `json:"dir"`
	MTU     int      `json:"mtu"`
	// Binds are files or directories bind-mounted read-only over Target.
	Binds []Bind `json:"binds"`
	// ForwardSocket is where the first process accepts connections for
	// 127.0.0.1:PORT inside the namespace.
	ForwardSocket string `json:"forwardSocket"`
	// HostSocket is where detour dials the workstation's 127.0.0.1:PORT
	// for the first process (ports nothing in the namespace listens on).
	HostSocket string `json:"hostSocket"`
	Foreground bool   `json:"foreground"`
	// Trees are staged under the private directory; Scratch is where
	// the first process keeps what mirroring needs.
	Trees   []treeMount `json:"trees,omitempty"`
	Scratch string      `json:"scratch"`
}

// Bind is a read-only bind mount in the namespace's private mount table.
type Bind struct {
	Source string `json:"source"`
	Target string `json:"target"`
}

// ctrlMsg travels on the control socket (SOCK_SEQPACKET: one message per
// datagram). The child sends "tun" (with the fd), any "note"s (a part
// that does not work, in Error), then "started" or "error"; the parent
// sends "signal" and "update".
type ctrlMsg struct {
	Kind   string `json:"kind"`
	Error  string `json:"error,omitempty"`
	Cause  string `json:"cause,omitempty"` // a sentinel's name, for errors.Is across the process boundary
	Signal int    `json:"signal,omitempty"`
	PID    int    `json:"pid,omitempty"`
	// Config is the parent's first message.
	Config *childConfig `json:"config,omitempty"`
	// Update is an "update": trees staged again, with new contents, for
	// targets already shown (a refreshed token, a changed ConfigMap).
	Update []treeMount `json:"update,omitempty"`
}

func sendMsg(c *net.UnixConn, m ctrlMsg, fd int) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	_, _, err = c.WriteMsgUnix(b, oob, nil)
	return err
}

func recvMsg(c *net.UnixConn) (ctrlMsg, *os.File, error) {
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return ctrlMsg{}, nil, err
	}
	if n == 0 {
		return ctrlMsg{}, nil, errors.New("control socket closed")
	}
	var m ctrlMsg
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		return ctrlMsg{}, nil, fmt.Errorf("control message: %w", err)
	}
	var f *os.File
	if oobn > 0 {
		cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err == nil && len(cmsgs) == 1 {
			if fds, err := unix.ParseUnixRights(&cmsgs[0]); err == nil && len(fds) == 1 {
				f = os.NewFile(uintptr(fds[0]), "tun")
			}
		}
	}
	return m, f, nil
}

// socketpair returns a connected SOCK_SEQPACKET pair: ours, and the file
// the child inherits.
func socketpair() (*net.UnixConn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("control socketpair: %w", err)
	}
	parent := os.NewFile(uintptr(fds[0]), "nsexec-ctrl")
	child := os.NewFile(uintptr(fds[1]), "nsexec-ctrl-child")
	fc, err := net.FileConn(parent)
	parent.Close()
	if err != nil {
		child.Close()
		return nil, nil, err
	}
	return fc.(*net.UnixConn), child, nil
}

// remoteError rebuilds the child's error on the parent's side: the same
// text (which ends with the sentinel's, as %w wrote it), and errors.Is
// finds the sentinel again.
func remoteError(m ctrlMsg) error {
	if s, ok := sentinels[m.Cause]; ok {
		return sentinelError{text: m.Error, sentinel: s}
	}
	return errors.New(m.Error)
}

type sentinelError struct {
	text     string
	sentinel error
}

func (e sentinelError) Error() string { return e.text }
func (e sentinelError) Unwrap() error { return e.sentinel }
