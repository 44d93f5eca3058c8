package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/detour-dev/detour/tests/internal/images"
)

// Up brings the cluster up, or completes a partly running one: binaries,
// guard, network, precheck, PKI and configs, then each component in order,
// the images, the node Ready, and the cluster DNS answering.
func Up(ctx context.Context, log *zap.Logger, cfg Config) error {
	t0 := time.Now()
	if os.Geteuid() != 0 {
		return errors.New("the local cluster needs root (network namespace, nftables, containerd)")
	}
	step := func(what string, f func() error) error {
		t := time.Now()
		if err := f(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		log.Info("step done", zap.String("step", what), zap.Duration("took", time.Since(t).Round(time.Millisecond)))
		return nil
	}
	if err := step("binaries", func() error { return EnsureBinaries(ctx, log, cfg) }); err != nil {
		return err
	}
	// Safety first: the guard is installed and verified before any address,
	// route or process exists.
	if err := step("egress guard", func() error { return InstallGuard(ctx, log) }); err != nil {
		return err
	}
	if err := step("record host state", func() error { return recordHostState(cfg) }); err != nil {
		return err
	}
	if err := step("network", func() error { return SetupNetwork(ctx, log) }); err != nil {
		return err
	}
	if err := step("safety precheck", func() error { return Precheck(ctx) }); err != nil {
		return err
	}
	if err := step("pki and configs", func() error {
		if err := EnsurePKI(cfg); err != nil {
			return err
		}
		return writeConfigs(cfg)
	}); err != nil {
		return err
	}
	h := &health{ctx: ctx, cfg: cfg}
	comps := components(cfg, h)
	for _, c := range comps {
		if c.name == "kube-proxy" {
			// kube-proxy exits when it sees the node's IPs change, which
			// happens if it starts while the kubelet is still registering.
			if err := step("node Ready", func() error { return waitNodeReady(ctx, cfg, 2*time.Minute) }); err != nil {
				return err
			}
		}
		if err := ensureComponent(ctx, log, cfg, c); err != nil {
			return err
		}
		if c.name == "containerd" {
			// The sandbox image must be there before the kubelet runs a pod.
			if err := step("images", func() error { return buildImages(ctx, log, cfg) }); err != nil {
				return err
			}
		}
	}
	// Everything must still be running a moment later, and still sealed.
	time.Sleep(time.Second)
	for _, c := range comps {
		if _, alive := pidOf(cfg, c); !alive {
			return fmt.Errorf("%s exited after start; see %s: %w", c.name, cfg.logFile(c.name), tail(cfg.logFile(c.name)))
		}
	}
	if err := waitNodeReady(ctx, cfg, time.Minute); err != nil {
		return err
	}
	if err := step("cluster DNS", func() error { return DeployDNS(ctx, log, cfg) }); err != nil {
		return err
	}
	if err := step("argo rollouts", func() error { return DeployArgoRollouts(ctx, log, cfg) }); err != nil {
		return err
	}
	if err := Precheck(ctx); err != nil {
		return err
	}
	log.Info("cluster up", zap.Duration("took", time.Since(t0).Round(time.Millisecond)),
		zap.String("kubeconfig", cfg.AdminKubeconfig()),
		zap.String("kubectl", filepath.Join(cfg.K8sBinDir(), "kubectl")))
	return nil
}

// buildImages builds the test images, the CoreDNS image and the etcd image
// (the demo's data store: the cluster's own cached etcd binary) and imports
// them into the cluster's containerd.
func buildImages(ctx context.Context, log *zap.Logger, cfg Config) error {
	extra, err := cfg.BinaryImages()
	if err != nil {
		return err
	}
	tarballs, err := images.Build(ctx, log, cfg.RepoDir, filepath.Join(cfg.StateDir, "images"), extra...)
	if err != nil {
		return err
	}
	return images.Import(ctx, log, cfg.ContainerdSocket(), tarballs)
}

func ensureComponent(ctx context.Context, log *zap.Logger, cfg Config, c component) error {
	t := time.Now()
	if pid, alive := pidOf(cfg, c); alive {
		if err := waitReady(ctx, log, cfg, c, 30*time.Second); err != nil {
			return err
		}
		log.Info("already running", zap.String("component", c.name), zap.Int("pid", pid))
		return nil
	}
	// Re-check the seal right before each start.
	if err := Precheck(ctx); err != nil {
		return fmt.Errorf("refusing to start %s: %w", c.name, err)
	}
	pid, err := start(cfg, c)
	if err != nil {
		return err
	}
	timeout := time.Minute
	if c.name == "kube-apiserver" {
		timeout = 3 * time.Minute
	}
	if err := waitReady(ctx, log, cfg, c, timeout); err != nil {
		return err
	}
	log.Info("started", zap.String("component", c.name), zap.Int("pid", pid),
		zap.Duration("took", time.Since(t).Round(time.Millisecond)), zap.String("log", cfg.logFile(c.name)))
	return nil
}

// Kubectl runs the cached kubectl with the admin kubeconfig.
func Kubectl(ctx context.Context, cfg Config, args ...string) (string, error) {
	return sh(ctx, filepath.Join(cfg.K8sBinDir(), "kubectl"), append([]string{"--kubeconfig", cfg.AdminKubeconfig()}, args...)...)
}

func nodeReady(ctx context.Context, cfg Config) error {
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := Kubectl(c, cfg, "get", "node", NodeName, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
	if err != nil {
		return err
	}
	if out != "True" {
		return fmt.Errorf("node %s Ready=%q", NodeName, out)
	}
	return nil
}

func waitNodeReady(ctx context.Context, cfg Config, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := nodeReady(ctx, cfg)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node not Ready after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Status reports the guard, the network and each component; ok is true when
// everything is up and healthy.
func Status(ctx context.Context, w io.Writer, cfg Config) (bool, error) {
	ok := true
	line := func(what string, err error, detail string) {
		state := "ok"
		if err != nil {
			state, ok = "FAIL", false
			detail = strings.TrimSpace(detail + " " + err.Error())
		}
		fmt.Fprintf(w, "%-24s %-5s %s\n", what, state, detail)
	}
	line("guard (inet "+GuardTable+")", VerifyGuard(ctx), "")
	if drops, err := GuardCounters(ctx); err == nil {
		var n uint64
		for _, d := range drops {
			n += d.Packets
		}
		var e error
		if n != 0 {
			e = fmt.Errorf("%w: %d packets", ErrGuardDropped, n)
		}
		line("guard drop counters", e, fmt.Sprintf("%d rules", len(drops)))
	}
	sealed := Precheck(ctx)
	line("netns "+NetnsName, sealed, "sealed: no default route, no external link")
	h := &health{ctx: ctx, cfg: cfg}
	for _, c := range components(cfg, h) {
		pid, alive := pidOf(cfg, c)
		var err error
		switch {
		case !alive:
			err = errors.New("not running")
		default:
			err = c.ready()
		}
		line(c.name, err, "pid "+strconv.Itoa(pid))
	}
	line("node "+NodeName, nodeReady(ctx, cfg), "Ready")
	// Without the host's routes into the netns a query to the cluster DNS
	// address would leave by the host's default route: not asked then.
	dns := errors.New("not asked: the cluster's network is not up")
	if sealed == nil {
		dns = DNSAnswers(ctx)
	}
	line("coredns "+ClusterDNS, dns, "kube-system/kube-dns: "+strings.TrimSuffix(dnsProbeName, ".")+" → "+APIServerSvcIP+" over udp and tcp")
	return ok, nil
}

// Down stops everything Up started and puts the host back as Up found it:
// processes by their recorded PIDs (containers and shims found through the
// cluster's own containerd socket and kubepods cgroups), mounts, the netns,
// the veth and routes, cgroups, host directories, sysctls, and the guard last.
func Down(ctx context.Context, log *zap.Logger, cfg Config) error {
	t0 := time.Now()
	var errs []error
	keep := func(err error) {
		if err != nil {
			log.Warn("down", zap.Error(err))
			errs = append(errs, err)
		}
	}
	if err := CheckGuardCounters(ctx, io.Discard); err != nil && !errors.Is(err, ErrGuardMissing) {
		log.Warn("guard counters are not zero", zap.Error(err))
	}
	st, stErr := loadHostState(cfg)
	if stErr != nil {
		log.Warn("no recorded host state; restoring what can be found", zap.Error(stErr))
	}
	comps := components(cfg, &health{ctx: ctx, cfg: cfg})
	byName := map[string]component{}
	for _, c := range comps {
		byName[c.name] = c
	}
	stopComp := func(name string) {
		c := byName[name]
		if pid, alive := pidOf(cfg, c); alive {
			stopPID(pid, func() bool { return isProcess(pid, c.bin) }, 10*time.Second)
			log.Info("stopped", zap.String("component", name), zap.Int("pid", pid))
		}
		_ = os.Remove(cfg.pidFile(name))
	}
	stopComp("kube-proxy")
	stopComp("kubelet")
	keep(killContainers(ctx, log, cfg))
	stopComp("containerd")
	keep(sweepProcesses(log, cfg))
	for _, n := range []string{"kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"} {
		stopComp(n)
	}

	prefixes := []string{cfg.StateDir, cfg.RunDir}
	var absent []string
	if st != nil {
		absent = st.Absent
		for _, n := range netnsNames() {
			if strings.HasPrefix(n, "cni-") && !contains(st.NetnsBefore, n) {
				prefixes = append(prefixes, "/run/netns/"+n)
			}
		}
	}
	for _, p := range absent {
		if p != "/run/netns" {
			prefixes = append(prefixes, p)
		}
	}
	keep(unmountUnder(prefixes))
	for _, p := range prefixes {
		if strings.HasPrefix(p, "/run/netns/cni-") {
			keep(os.Remove(p))
		}
	}
	keep(TeardownNetwork(ctx, log))

	if st != nil {
		for _, cg := range kubepodsCgroups() {
			if len(st.Cgroups) > 0 {
				keep(removeCgroupTree(cg))
			}
		}
		for _, s := range kubeletSysctls {
			if v, ok := st.Sysctls[s]; ok {
				if cur, _ := readSysctl(s); cur != v {
					keep(os.WriteFile(sysctlPath(s), []byte(v), 0o644))
					log.Info("restored sysctl", zap.String("name", s), zap.String("from", cur), zap.String("to", v))
				}
			}
		}
		for _, p := range absent {
			if p == "/run/netns" {
				// ip netns add made it a bind mount of itself; undo that
				// only if it is empty (other tests may use it).
				if len(netnsNames()) == 0 {
					_ = syscall.Unmount(p, syscall.MNT_DETACH)
					_ = syscall.Rmdir(p)
				}
				continue
			}
			keep(os.RemoveAll(p))
		}
	}
	keep(os.RemoveAll(cfg.RunDir))
	// Keep the logs of the last run for debugging; everything else goes.
	if ents, err := os.ReadDir(cfg.StateDir); err == nil {
		for _, e := range ents {
			if e.Name() != "logs" {
				keep(os.RemoveAll(filepath.Join(cfg.StateDir, e.Name())))
			}
		}
	}
	keep(RemoveGuard(ctx))
	if len(errs) > 0 {
		return fmt.Errorf("down finished with errors: %w", errors.Join(errs...))
	}
	log.Info("cluster down; host restored", zap.Duration("took", time.Since(t0).Round(time.Millisecond)))
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// killContainers kills every task of the cluster's containerd (while it still
// runs), so that no container outlives its shim.
func killContainers(ctx context.Context, log *zap.Logger, cfg Config) error {
	if !exists(cfg.ContainerdSocket()) {
		return nil
	}
	ctr := func(args ...string) (string, error) {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return sh(c, "ctr", append([]string{"--address", cfg.ContainerdSocket(), "-n", "k8s.io"}, args...)...)
	}
	out, err := ctr("tasks", "ls", "-q")
	if err != nil {
		return nil // containerd already gone; the sweep finds the rest
	}
	ids := strings.Fields(out)
	for _, id := range ids {
		_, _ = ctr("tasks", "kill", "-a", "-s", "SIGKILL", id)
	}
	for _, id := range ids {
		_, _ = ctr("tasks", "rm", "-f", id)
	}
	if cs, err := ctr("containers", "ls", "-q"); err == nil {
		for _, id := range strings.Fields(cs) {
			_, _ = ctr("containers", "rm", id)
		}
	}
	if len(ids) > 0 {
		log.Info("killed containers", zap.Int("count", len(ids)))
	}
	return nil
}

// sweepProcesses kills what the cluster left: containerd shims started by
// the cluster's containerd (their command line names its socket) and any
// process in a kubepods cgroup (only the cluster's kubelet makes them).
func sweepProcesses(log *zap.Logger, cfg Config) error {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return fmt.Errorf("read /proc: %w", err)
	}
	sock := cfg.ContainerdSocket()
	var killed []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		cgroup, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		ours := strings.Contains(string(cmdline), "\x00"+sock+"\x00") ||
			strings.Contains(string(cmdline), "\x00"+sock+".ttrpc\x00") ||
			strings.Contains(string(cgroup), ":/kubepods")
		if ours {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			killed = append(killed, pid)
		}
	}
	if len(killed) > 0 {
		log.Info("killed leftover shims and container processes", zap.Ints("pids", killed))
		time.Sleep(500 * time.Millisecond)
	}
	return nil
}
