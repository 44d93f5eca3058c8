//go:build linux

package nsexec

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/link/tun"
)

// IsChild reports whether this process is a namespace's first process,
// re-executed by Start. main calls ChildMain then, before anything else.
func IsChild() bool { return os.Getenv(childEnv) == "1" }

// ChildMain sets the namespace up, runs the command and returns the exit
// status to exit with. It reports failures to the parent, which explains
// them to the user.
func ChildMain() int {
	f := os.NewFile(ctrlFD, "nsexec-ctrl")
	fc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		fmt.Fprintf(os.Stderr, "detour: namespace: control socket: %v\n", err)
		return 125
	}
	ctrl := fc.(*net.UnixConn)
	m, _, err := recvMsg(ctrl)
	if err != nil {
		fmt.Fprintf(os.Stderr, "detour: namespace: %v\n", err)
		return 125
	}
	if m.Config == nil || len(m.Config.Command) == 0 {
		fail(ctrl, fmt.Errorf("namespace: no command"))
		return 125
	}
	cmd, err := setUp(ctrl, *m.Config)
	if err != nil {
		fail(ctrl, err)
		return 125
	}
	code := supervise(ctrl, cmd)
	drainForwards()
	return code
}

func fail(ctrl *net.UnixConn, err error) {
	_ = sendMsg(ctrl, ctrlMsg{Kind: "error", Error: err.Error(), Cause: causeName(err)}, -1)
}

// setUp builds the namespace's network and mounts, then starts the command.
func setUp(ctrl *net.UnixConn, cfg childConfig) (*exec.Cmd, error) {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return nil, capabilityError("make the mount namespace private", err)
	}
	// A PID namespace needs its own /proc, or ps and /proc/self lie.
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return nil, capabilityError("mount /proc", err)
	}
	fd, err := setUpNetwork(cfg.MTU)
	if err != nil {
		return nil, err
	}
	err = sendMsg(ctrl, ctrlMsg{Kind: "tun"}, fd)
	unix.Close(fd)
	if err != nil {
		return nil, fmt.Errorf("hand the TUN to detour: %w", err)
	}
	// The pod's files first: a bind below (resolv.conf) may land in a
	// directory they made a mirror of.
	if err := mountTrees(cfg.Trees, cfg.Scratch); err != nil {
		return nil, err
	}
	for _, b := range cfg.Binds {
		if err := bindReadOnly(b); err != nil {
			return nil, err
		}
		_ = os.Remove(b.Source) // the mount keeps it; no copy stays behind
	}
	if cfg.ForwardSocket != "" {
		if err := serveForwards(cfg.ForwardSocket); err != nil {
			return nil, err
		}
	}
	if cfg.HostSocket != "" {
		if err := serveHostLoopback(cfg.HostSocket); err != nil {
			_ = sendMsg(ctrl, ctrlMsg{Kind: "note", Error: fmt.Sprintf("ports of 127.0.0.1 the command does not listen on stay inside its namespace, not the workstation's: %v", err)}, -1)
		}
	}
	// The command gets no capability: ambient ones would survive its exec.
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("drop capabilities: %w", err)
	}
	cmd := exec.Command(cfg.Command[0], cfg.Command[1:]...)
	cmd.Env, cmd.Dir = cfg.Env, cfg.Dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %q: %w", cfg.Command[0], err)
	}
	_ = sendMsg(ctrl, ctrlMsg{Kind: "started", PID: cmd.Process.Pid}, -1)
	return cmd, nil
}

// setUpNetwork brings up lo and a TUN that takes every route but loopback,
// and returns the TUN's fd.
func setUpNetwork(mtu int) (int, error) {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return -1, capabilityError("find lo", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return -1, capabilityError("bring lo up", err)
	}
	fd, err := tun.Open(TUNName)
	if err != nil {
		return -1, tunError(err)
	}
	link, err := netlink.LinkByName(TUNName)
	if err == nil {
		err = netlink.LinkSetMTU(link, mtu)
	}
	if err == nil {
		err = netlink.LinkSetUp(link)
	}
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("configure %s: %v: %w", TUNName, err, ErrNoTUN)
	}
	if err := routeAll(link); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func routeAll(link netlink.Link) error {
	for _, a := range []struct {
		addr  string
		flags int
		def   string
	}{{Addr4 + "/32", 0, "0.0.0.0/0"}, {Addr6 + "/128", unix.IFA_F_NODAD, "::/0"}} {
		addr, _ := netlink.ParseAddr(a.addr)
		addr.Flags = a.flags
		if err := netlink.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("address %s on %s: %v: %w", a.addr, TUNName, err, ErrNoTUN)
		}
		_, dst, _ := net.ParseCIDR(a.def)
		src := addr.IP
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Src: src, Scope: netlink.SCOPE_LINK}); err != nil {
			return fmt.Errorf("route %s via %s: %v: %w", a.def, TUNName, err, ErrNoTUN)
		}
	}
	return nil
}

func bindReadOnly(b Bind) error {
	if err := unix.Mount(b.Source, b.Target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s over %s: %w", b.Source, b.Target, err)
	}
	if err := unix.Mount("", b.Target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|lockedFlags(b.Target), ""); err != nil {
		return fmt.Errorf("make %s read-only: %w", b.Target, err)
	}
	return nil
}

// supervise waits for the command as the PID namespace's init: it reaps
// every orphan, passes on the signals the parent forwards, and returns the
// command's status. Signals sent to this process itself come from the
// terminal (Ctrl-C), which sends them to the command too: they are not
// passed on, so the command gets each once.
func supervise(ctrl *net.UnixConn, cmd *exec.Cmd) int {
	own := make(chan os.Signal, 8)
	signal.Notify(own, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	go func() {
		for range own {
		}
	}()
	go func() {
		for {
			m, _, err := recvMsg(ctrl)
			if err != nil {
				// The parent is gone: end the command.
				_ = cmd.Process.Signal(syscall.SIGKILL)
				return
			}
			switch m.Kind {
			case "signal":
				_ = cmd.Process.Signal(syscall.Signal(m.Signal))
			case "update":
				if err := updateTrees(m.Update); err != nil {
					fmt.Fprintf(os.Stderr, "detour: the pod's files in the namespace: %v\n", err)
				}
			}
		}
	}()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 125
		}
		if pid != cmd.Process.Pid {
			continue // an orphan reaped
		}
		switch {
		case ws.Exited():
			return ws.ExitStatus()
		case ws.Signaled():
			return 128 + int(ws.Signal())
		}
	}
}

// lockedFlags are the mount flags a bind inherited from its source's
// filesystem (a /tmp mounted nosuid,nodev): in a mount namespace made
// without privilege they are locked, and a remount that drops them is
// refused (EPERM), so the remount repeats them, as runc and bwrap do.
func lockedFlags(path string) uintptr {
	var st unix.Statfs_t
	if unix.Statfs(path, &st) != nil {
		return 0
	}
	var flags uintptr
	for _, f := range []struct{ st, ms int64 }{
		{unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV}, {unix.ST_NOEXEC, unix.MS_NOEXEC},
		{unix.ST_NOATIME, unix.MS_NOATIME}, {unix.ST_NODIRATIME, unix.MS_NODIRATIME}, {unix.ST_RELATIME, unix.MS_RELATIME},
	} {
		if st.Flags&f.st != 0 {
			flags |= uintptr(f.ms)
		}
	}
	return flags
}
