//go:build windows

package daemon

import (
	"os/exec"
	"syscall"
)

// Windows process creation flags (winbase.h).
const (
	detachedProcess       = 0x00000008
	createNewProcessGroup = 0x00000200
)

// detach starts the daemon without the console of the command that
// started it, in its own process group (Ctrl-C there does not reach it).
func detach(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{CreationFlags: detachedProcess | createNewProcessGroup}
}

// withUmask runs f: Windows has no umask; the socket's directory, under
// the user's profile, carries the user's own ACL.
func withUmask(_ int, f func()) { f() }

// privateDir checks nothing on Windows: modes do not describe ACLs, and
// the directory is made under the user's profile (%LOCALAPPDATA%).
func privateDir(string) error { return nil }
