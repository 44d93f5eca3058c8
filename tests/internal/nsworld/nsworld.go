// Package nsworld builds a small network of Linux network namespaces for
// detour's integration tests, benchmarks and demo: a "pod" namespace and a
// "cluster client" namespace joined by a veth pair, with addresses that
// exist only inside them. The host namespace is never given a route to
// them, so nothing the tests send can leave the machine.
//
// It needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and the ip(8) command.
package nsworld

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
)

// World is a pod namespace and a cluster-client namespace on one veth link.
type World struct {
	Pod      string // netns name of the pod
	Client   string // netns name of the cluster client
	PodIP    netip.Addr
	ClientIP netip.Addr
}

// Available says why worlds cannot be built here, or nil if they can.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespace tests need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("network namespace tests need ip(8) from iproute2 (make deps)")
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		return errors.New("network namespace tests need nsenter(1) from util-linux")
	}
	return nil
}

// New creates the namespaces and the link. Names start with "dt-" and a
// random suffix so parallel runs and leftovers never collide; the
// addresses, 10.251.X.1 and 10.251.X.2 on a /30, exist only in the two
// namespaces.
func New() (*World, error) {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	id := hex.EncodeToString(b[:])
	subnet := int(b[0]) // a random /30 per world keeps conntrack of old worlds irrelevant
	w := &World{
		Pod:      "dt-" + id + "-pod",
		Client:   "dt-" + id + "-cli",
		PodIP:    netip.AddrFrom4([4]byte{10, 251, byte(subnet), 1}),
		ClientIP: netip.AddrFrom4([4]byte{10, 251, byte(subnet), 2}),
	}
	vethPod, vethCli := "dtp"+id, "dtc"+id
	steps := [][]string{
		{"netns", "add", w.Pod},
		{"netns", "add", w.Client},
		{"-n", w.Pod, "link", "set", "lo", "up"},
		{"-n", w.Client, "link", "set", "lo", "up"},
		// Created inside the pod namespace, so the host never holds either end.
		{"-n", w.Pod, "link", "add", vethPod, "type", "veth", "peer", "name", vethCli, "netns", w.Client},
		{"-n", w.Pod, "addr", "add", w.PodIP.String() + "/30", "dev", vethPod},
		{"-n", w.Client, "addr", "add", w.ClientIP.String() + "/30", "dev", vethCli},
		{"-n", w.Pod, "link", "set", vethPod, "up"},
		{"-n", w.Client, "link", "set", vethCli, "up"},
	}
	for _, args := range steps {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			w.Close()
			return nil, fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return w, nil
}

// Close deletes both namespaces; the veth pair goes with them.
func (w *World) Close() error {
	var errs []error
	for _, ns := range []string{w.Pod, w.Client} {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
			errs = append(errs, fmt.Errorf("ip netns del %s: %w: %s", ns, err, out))
		}
	}
	return errors.Join(errs...)
}

// In runs fn on an OS thread switched into namespace ns. Sockets created by
// fn stay in ns for their whole life, whichever thread later uses them.
func In(ns string, fn func() error) error {
	runtime.LockOSThread()
	// If switching back fails the thread is left locked, and Go discards it
	// when the goroutine exits instead of reusing a thread in the wrong netns.
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(ns)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open netns %s: %w", ns, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", ns, err)
	}
	fnErr := fn()
	if err := netns.Set(orig); err != nil {
		return fmt.Errorf("leave netns %s: %w", ns, err)
	}
	runtime.UnlockOSThread()
	return fnErr
}

// Dial connects from inside namespace ns, as a process there would.
func Dial(ctx context.Context, ns, addr string) (net.Conn, error) {
	var c net.Conn
	err := In(ns, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// Dialer returns a DialContext that connects from inside ns, for http.Transport.
func Dialer(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, _, addr string) (net.Conn, error) { return Dial(ctx, ns, addr) }
}

// Listen opens a TCP listener inside namespace ns.
func Listen(ns, addr string) (net.Listener, error) {
	var ln net.Listener
	err := In(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln, err
}

// Command prepares name to run inside namespace ns (nsenter --net, which,
// unlike ip netns exec, does not remount /sys).
func Command(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=/run/netns/" + ns, name}, args...)...)
}
