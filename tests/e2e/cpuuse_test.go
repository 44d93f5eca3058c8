//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// cpuUse is CPU time in ms by process name, for a breakdown of what a
// transfer costs every process on the machine.
type cpuUse map[string]float64

// cpuSnapshot is every process's CPU time (utime+stime, in ticks) by pid,
// with the test process's own and its waited-for children's.
type cpuSnapshot struct {
	procs          map[int]procTicks
	self, children float64 // ms
}

type procTicks struct {
	comm  string
	ticks float64
}

func takeCPUSnapshot() cpuSnapshot {
	s := cpuSnapshot{procs: map[int]procTicks{}}
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range dirs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // gone meanwhile
		}
		line := string(b)
		open, close := strings.IndexByte(line, '('), strings.LastIndexByte(line, ')')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(line[close+1:])
		if len(f) < 13 {
			continue
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(line[:open]))
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		s.procs[pid] = procTicks{comm: line[open+1 : close], ticks: ut + st}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.self = tvMs(ru.Utime) + tvMs(ru.Stime)
	}
	if syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru) == nil {
		s.children = tvMs(ru.Utime) + tvMs(ru.Stime)
	}
	return s
}

func tvMs(tv syscall.Timeval) float64 { return float64(tv.Sec)*1e3 + float64(tv.Usec)/1e3 }

// since is the CPU each process name spent from s0 to s: processes that
// lived through both by their difference, new ones whole. The test
// process is "(bench process)", its finished children "(children)".
func (s cpuSnapshot) since(s0 cpuSnapshot) cpuUse {
	u := cpuUse{}
	self := os.Getpid()
	for pid, p := range s.procs {
		if pid == self {
			continue
		}
		d := p.ticks
		if q, ok := s0.procs[pid]; ok && q.comm == p.comm {
			d -= q.ticks
		}
		if d > 0 {
			u[p.comm] += d * 10 // USER_HZ 100
		}
	}
	u["(bench process)"] = s.self - s0.self
	u["(children)"] = s.children - s0.children
	return u
}

func (u cpuUse) total() float64 {
	var t float64
	for _, v := range u {
		t += v
	}
	return t
}

// top lists the n largest, each in ms per MB.
func (u cpuUse) top(n int, mb float64) string {
	names := make([]string, 0, len(u))
	for k := range u {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return u[names[i]] > u[names[j]] })
	var b strings.Builder
	fmt.Fprintf(&b, "total %.1f ms/MB:", u.total()/mb)
	for i, k := range names {
		if i == n || u[k]/mb < 0.05 {
			break
		}
		fmt.Fprintf(&b, " %s %.2f", k, u[k]/mb)
	}
	return b.String()
}

func (u cpuUse) add(v cpuUse) {
	for k, x := range v {
		u[k] += x
	}
}
