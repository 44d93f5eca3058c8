package nsexec

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
)

// Sentinels: why a namespace could not be made. Each error that wraps one
// also says, in one line, the cause and the fix.
var (
	// ErrNoUserNamespaces: the kernel or a security profile refuses
	// unprivileged user namespaces.
	ErrNoUserNamespaces = errors.New("unprivileged user namespaces are not available")
	// ErrNoTUN: /dev/net/tun cannot be opened or configured.
	ErrNoTUN = errors.New("no usable TUN device")
	// ErrUnsupported: not Linux.
	ErrUnsupported = errors.New("per-process cluster networking needs Linux")
	// ErrNothingListens: no socket in the namespace listens on the port.
	ErrNothingListens = errors.New("nothing listens on that port inside the command's namespace")
)

var sentinels = map[string]error{
	"no-userns": ErrNoUserNamespaces,
	"no-tun":    ErrNoTUN,
}

func causeName(err error) string {
	for name, s := range sentinels {
		if errors.Is(err, s) {
			return name
		}
	}
	return ""
}

// readSysctl returns a sysctl's value, or "" when it does not exist.
func readSysctl(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// cloneError explains why creating the user namespace failed.
func cloneError(err error) error {
	switch {
	case readSysctl("/proc/sys/user/max_user_namespaces") == "0":
		return fmt.Errorf("user namespaces are disabled (sysctl user.max_user_namespaces=0): set it above 0 (e.g. sysctl -w user.max_user_namespaces=15000): %w", ErrNoUserNamespaces)
	case readSysctl("/proc/sys/kernel/unprivileged_userns_clone") == "0":
		return fmt.Errorf("unprivileged user namespaces are disabled (sysctl kernel.unprivileged_userns_clone=0): set it to 1: %w", ErrNoUserNamespaces)
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return fmt.Errorf("creating a user namespace was refused (%v): a container's seccomp profile or a security module blocks unshare; run detour outside the container, or allow unshare: %w", err, ErrNoUserNamespaces)
	case errors.Is(err, syscall.ENOSPC):
		return fmt.Errorf("the user namespace limit is reached (%v): raise user.max_user_namespaces: %w", err, ErrNoUserNamespaces)
	}
	return fmt.Errorf("create the namespaces: %v: %w", err, ErrNoUserNamespaces)
}

// capabilityError explains an EPERM inside the new namespace: the process
// should hold CAP_NET_ADMIN and CAP_SYS_ADMIN there. Ubuntu's AppArmor
// restriction lets the namespace be created but strips them.
func capabilityError(op string, err error) error {
	if readSysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1" {
		return fmt.Errorf("%s: %v: AppArmor restricts unprivileged user namespaces here (kernel.apparmor_restrict_unprivileged_userns=1): install an AppArmor profile that allows userns for detour (see docs/cluster-network.md), or set the sysctl to 0: %w", op, err, ErrNoUserNamespaces)
	}
	return fmt.Errorf("%s: %v (no capability inside the new user namespace): %w", op, err, ErrNoUserNamespaces)
}

// tunError explains why the TUN device could not be opened.
func tunError(err error) error {
	if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
		mode := "unknown mode"
		if fi, serr := os.Stat("/dev/net/tun"); serr == nil {
			mode = fmt.Sprintf("mode %04o", fi.Mode().Perm())
		}
		return fmt.Errorf("/dev/net/tun is not open to you (%s; standard distributions ship it 0666): run chmod 0666 /dev/net/tun as root for the full cluster network: %w", mode, ErrNoTUN)
	}
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENODEV) {
		return fmt.Errorf("/dev/net/tun does not exist (%v): load the tun module (modprobe tun) for the full cluster network: %w", err, ErrNoTUN)
	}
	return fmt.Errorf("open /dev/net/tun: %v: %w", err, ErrNoTUN)
}
