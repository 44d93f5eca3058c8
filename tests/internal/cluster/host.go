package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Sysctls the kubelet changes host-wide (protectKernelDefaults: false).
var kubeletSysctls = []string{"vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops"}

// hostPaths are host directories the kubelet, containerd or CNI write to
// whatever their configuration says. down removes the ones up found absent.
var hostPaths = []string{
	"/run/containerd", "/var/lib/kubelet", "/var/log/containers", "/var/log/pods",
	"/var/lib/cni", "/usr/libexec/kubernetes", "/etc/kubernetes", "/opt/containerd",
	"/etc/cni", "/opt/cni", "/run/netns",
}

// hostState is what the host looked like before the first up.
type hostState struct {
	Sysctls     map[string]string `json:"sysctls"`
	Absent      []string          `json:"absentPaths"`
	NetnsBefore []string          `json:"netnsBefore"`
	Cgroups     []string          `json:"absentCgroups"`
}

func (c Config) hostStateFile() string { return filepath.Join(c.StateDir, "host-state.json") }

func sysctlPath(name string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/"))
}

func readSysctl(name string) (string, error) {
	b, err := os.ReadFile(sysctlPath(name))
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func kubepodsCgroups() []string {
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods")
	if fi, err := os.Stat("/sys/fs/cgroup/kubepods"); err == nil && fi.IsDir() {
		dirs = append(dirs, "/sys/fs/cgroup/kubepods")
	}
	return dirs
}

func netnsNames() []string {
	ents, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// recordHostState saves the host's state once, before up changes anything;
// later ups keep the first record so that down restores the original.
func recordHostState(cfg Config) error {
	if exists(cfg.hostStateFile()) {
		return nil
	}
	st := hostState{Sysctls: map[string]string{}, NetnsBefore: netnsNames()}
	for _, s := range kubeletSysctls {
		v, err := readSysctl(s)
		if err != nil {
			return err
		}
		st.Sysctls[s] = v
	}
	for _, p := range hostPaths {
		if !exists(p) {
			st.Absent = append(st.Absent, p)
		}
	}
	if len(kubepodsCgroups()) == 0 {
		st.Cgroups = []string{"kubepods"}
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode host state: %w", err)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	if err := os.WriteFile(cfg.hostStateFile(), b, 0o644); err != nil {
		return fmt.Errorf("write host state: %w", err)
	}
	return nil
}

func loadHostState(cfg Config) (*hostState, error) {
	b, err := os.ReadFile(cfg.hostStateFile())
	if err != nil {
		return nil, fmt.Errorf("read host state: %w", err)
	}
	var st hostState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("decode host state: %w", err)
	}
	return &st, nil
}

// unmountUnder lazily unmounts every mount point under the given prefixes,
// deepest first.
func unmountUnder(prefixes []string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("read mountinfo: %w", err)
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		for _, p := range prefixes {
			if mp == p || strings.HasPrefix(mp, p+"/") {
				points = append(points, mp)
				break
			}
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, mp := range points {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// removeCgroupTree removes a cgroup directory tree bottom-up (cgroupfs only
// allows rmdir of empty groups; files inside are virtual).
func removeCgroupTree(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	var errs []error
	for _, e := range ents {
		if e.IsDir() {
			errs = append(errs, removeCgroupTree(filepath.Join(dir, e.Name())))
		}
	}
	if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("rmdir %s: %w", dir, err))
	}
	return errors.Join(errs...)
}
