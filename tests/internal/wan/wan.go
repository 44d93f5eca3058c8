// Package wan puts a long link between the host and a network namespace
// of its own, for benchmarks of a cluster that is far away: two TUN
// devices, one on the host and one in the namespace, and a userspace delay
// line that passes each packet from one to the other after a delay,
// dropping some. It is written by hand because the kernel of the machines
// this runs on has no netem (nor the prio or fq qdiscs that would let a tc
// filter or a BPF program delay packets): tests/e2e BenchmarkRemoteCluster
// says so when tc fails.
//
// Only packets that Match selects (TCP to or from one port) are delayed
// and dropped; the others pass at once, so the test can reach the
// namespace's listeners without crossing the long link itself. One Line
// runs on a host at a time (its devices and addresses are fixed).
package wan

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/detour-dev/detour/tests/internal/nsworld"
	"github.com/detour-dev/detour/tunnel"
)

// Addresses of the link: the host's end and the namespace's (a /30 outside
// every range the local cluster and its egress guard use).
const (
	HostAddr = "10.77.0.1"
	NSAddr   = "10.77.0.2"
	prefix   = 30
	hostDev  = "dwan-h"
	nsDev    = "dwan-w"
	mtu      = 1500 // what a real path gives: per-packet costs as on one
	queueLen = 1 << 16
)

// Line is the delay line; Set changes its delay and loss while it runs.
type Line struct {
	Netns string
	port  uint16
	host  *os.File
	ns    *os.File
	delay atomic.Int64  // nanoseconds, each way
	loss  atomic.Uint64 // the fraction dropped each way, times 2^53
	drops atomic.Int64
	wg    sync.WaitGroup

	statsMu sync.Mutex
	stats   Stats
}

// Stats is what crossed the line with delay since the last ResetStats:
// the packets each way and, for each, how much later than due the line
// delivered it (its own overhead: the wake-up and the TUN write).
type Stats struct {
	ToNS, ToHost int
	late         []time.Duration
}

// LateP50 is the median of how late the line delivered a packet.
func (s Stats) LateP50() time.Duration {
	if len(s.late) == 0 {
		return 0
	}
	l := slices.Clone(s.late)
	slices.Sort(l)
	return l[len(l)/2]
}

// ResetStats starts counting anew.
func (l *Line) ResetStats() {
	l.statsMu.Lock()
	l.stats = Stats{}
	l.statsMu.Unlock()
}

// Stats returns what crossed since the last ResetStats.
func (l *Line) Stats() Stats {
	l.statsMu.Lock()
	defer l.statsMu.Unlock()
	s := l.stats
	s.late = slices.Clone(s.late)
	return s
}

func (l *Line) count(toNS bool, late time.Duration) {
	l.statsMu.Lock()
	defer l.statsMu.Unlock()
	if toNS {
		l.stats.ToNS++
	} else {
		l.stats.ToHost++
	}
	if len(l.stats.late) < 1<<16 {
		l.stats.late = append(l.stats.late, late)
	}
}

// Start creates namespace netns (which must not exist), the two TUN
// devices with their addresses, and runs the line; packets of TCP to or
// from port are the ones delayed. Close removes it all.
func Start(netns string, port uint16) (*Line, error) {
	l := &Line{Netns: netns, port: port}
	if err := run("ip", "netns", "add", netns); err != nil {
		return nil, err
	}
	if err := l.setUp(); err != nil {
		l.Close()
		return nil, err
	}
	for _, d := range []struct{ from, to *os.File }{{l.host, l.ns}, {l.ns, l.host}} {
		q := make(chan packet, queueLen)
		l.wg.Add(2)
		go l.read(d.from, d.to, q)
		go l.write(d.to, q, d.to == l.ns)
	}
	return l, nil
}

func (l *Line) setUp() error {
	var err error
	if l.host, err = openTUN(hostDev); err != nil {
		return err
	}
	if err := nsworld.In(l.Netns, func() error {
		l.ns, err = openTUN(nsDev)
		return err
	}); err != nil {
		return err
	}
	steps := [][]string{
		{"ip", "addr", "add", fmt.Sprintf("%s/%d", HostAddr, prefix), "dev", hostDev},
		{"ip", "link", "set", hostDev, "mtu", fmt.Sprint(mtu), "up"},
		{"ip", "-n", l.Netns, "link", "set", "lo", "up"},
		{"ip", "-n", l.Netns, "addr", "add", fmt.Sprintf("%s/%d", NSAddr, prefix), "dev", nsDev},
		{"ip", "-n", l.Netns, "link", "set", nsDev, "mtu", fmt.Sprint(mtu), "up"},
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// Set makes the line delay matching packets by delay each way (the round
// trip is twice it) and drop the fraction loss of them each way.
func (l *Line) Set(delay time.Duration, loss float64) {
	l.delay.Store(int64(delay))
	l.loss.Store(uint64(loss * (1 << 53)))
}

// Drops says how many packets the line dropped (by loss or a full queue).
func (l *Line) Drops() int64 { return l.drops.Load() }

// Close stops the line and removes its devices and namespace.
func (l *Line) Close() error {
	var errs []error
	for _, f := range []*os.File{l.host, l.ns} {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	l.wg.Wait()
	errs = append(errs, run("ip", "netns", "del", l.Netns))
	return errors.Join(errs...)
}

type packet struct {
	due  time.Time
	data []byte
}

func (l *Line) read(from, to *os.File, q chan<- packet) {
	defer l.wg.Done()
	defer close(q)
	buf := make([]byte, 1<<16)
	for {
		n, err := from.Read(buf)
		if err != nil {
			return
		}
		p := buf[:n]
		if !matches(p, l.port) {
			to.Write(p) // a TUN write is one whole packet
			continue
		}
		if loss := l.loss.Load(); loss > 0 && rand.Uint64N(1<<53) < loss {
			l.drops.Add(1)
			continue
		}
		select {
		case q <- packet{time.Now().Add(time.Duration(l.delay.Load())), append([]byte(nil), p...)}:
		default: // a full queue drops, as a router's does
			l.drops.Add(1)
		}
	}
}

// write delivers each packet when due. It sleeps in clock_nanosleep on a
// thread of its own: time.Sleep wakes 0.2 ms late at the median here
// (0.8 ms at p95), clock_nanosleep about half that.
func (l *Line) write(to *os.File, q <-chan packet, toNS bool) {
	defer l.wg.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for p := range q {
		if d := time.Until(p.due); d > 0 {
			ts := unix.NsecToTimespec(int64(d))
			for unix.ClockNanosleep(unix.CLOCK_MONOTONIC, 0, &ts, &ts) == unix.EINTR {
			}
		}
		to.Write(p.data)
		l.count(toNS, time.Since(p.due))
	}
}

// matches says whether an IPv4 packet is TCP to or from port.
func matches(p []byte, port uint16) bool {
	if len(p) < 20 || p[0]>>4 != 4 || p[9] != unix.IPPROTO_TCP {
		return false
	}
	ihl := int(p[0]&0x0f) * 4
	if len(p) < ihl+4 {
		return false
	}
	sport := uint16(p[ihl])<<8 | uint16(p[ihl+1])
	dport := uint16(p[ihl+2])<<8 | uint16(p[ihl+3])
	return sport == port || dport == port
}

// openTUN creates TUN device name (no packet information header) in the
// calling thread's network namespace.
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create tun %s: %w", name, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

func run(name string, args ...string) error {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// Relay accepts connections on the host's end of the line at port and
// joins each to target (the API server) with tunnel.Join, so that clients
// in the namespace reach it across the line. It stops when the returned
// listener is closed.
func Relay(port uint16, target string) (net.Listener, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(HostAddr, fmt.Sprint(port)))
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				t, err := net.DialTimeout("tcp", target, 10*time.Second)
				if err != nil {
					c.Close()
					return
				}
				tunnel.Join(c, t)
			}()
		}
	}()
	return ln, nil
}
