package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
)

// K8sBinaries are the Kubernetes commands built from k8s.io/kubernetes.
var K8sBinaries = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"}

// CoreDNSPlugins are the CoreDNS plugins compiled into the cluster DNS:
// those its Corefile uses (dns.go), plus log for debugging. No plugin that
// sends queries to another server (forward, grpc, etcd, ...) is in the
// binary, and leaving out the cloud back ends keeps the build short.
var CoreDNSPlugins = []string{"errors", "log", "health", "ready", "kubernetes", "file", "cache", "loadbalance"}

// EnsureBinaries builds etcd, the Kubernetes binaries, CoreDNS and the Argo
// Rollouts controller into the cache, or reuses them when the cache already
// holds them.
func EnsureBinaries(ctx context.Context, log *zap.Logger, cfg Config) error {
	if err := ensureEtcd(ctx, log, cfg); err != nil {
		return err
	}
	if err := ensureK8s(ctx, log, cfg); err != nil {
		return err
	}
	if err := ensureCoreDNS(ctx, log, cfg); err != nil {
		return err
	}
	return ensureArgoRollouts(ctx, log, cfg)
}

func allExist(dir string, names []string) bool {
	for _, n := range names {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

func ensureK8s(ctx context.Context, log *zap.Logger, cfg Config) error {
	out := cfg.K8sBinDir()
	if allExist(out, K8sBinaries) {
		log.Info("kubernetes binaries cached", zap.String("version", KubernetesVersion), zap.String("dir", out))
		return nil
	}
	start := time.Now()
	src := filepath.Join(cfg.CacheDir, "src", "k8s-"+KubernetesVersion)
	log.Info("building kubernetes from source (cold build: ~15 min on 2 cores)",
		zap.String("version", KubernetesVersion), zap.Strings("binaries", K8sBinaries), zap.String("module", src))
	staging, err := stagingModules(ctx, src)
	if err != nil {
		return err
	}
	var gomod strings.Builder
	fmt.Fprintf(&gomod, "module detour.local/k8s-build\n\ngo 1.26\n\nrequire k8s.io/kubernetes %s\n\n", KubernetesVersion)
	for _, b := range K8sBinaries {
		fmt.Fprintf(&gomod, "tool k8s.io/kubernetes/cmd/%s\n", b)
	}
	gomod.WriteString("\nreplace (\n")
	for _, m := range staging {
		fmt.Fprintf(&gomod, "\t%s => %s %s\n", m, m, StagingVersion)
	}
	gomod.WriteString(")\n")
	if err := writeScratchModule(ctx, src, gomod.String()); err != nil {
		return err
	}
	ldflags := fmt.Sprintf("-s -w -X k8s.io/component-base/version.gitVersion=%s -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=%s",
		KubernetesVersion, strings.Split(KubernetesVersion, ".")[1])
	tmp := filepath.Join(cfg.CacheDir, ".tmp", "k8s-"+KubernetesVersion)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return fmt.Errorf("create build dir: %w", err)
	}
	args := []string{"build", "-trimpath", "-ldflags", ldflags, "-o", tmp + "/"}
	for _, b := range K8sBinaries {
		args = append(args, "k8s.io/kubernetes/cmd/"+b)
	}
	if err := goCmd(ctx, log, src, args...); err != nil {
		return fmt.Errorf("build kubernetes: %w", err)
	}
	if err := publish(tmp, out); err != nil {
		return err
	}
	log.Info("kubernetes built", zap.Duration("took", time.Since(start).Round(time.Second)), zap.String("dir", out))
	return nil
}

func ensureEtcd(ctx context.Context, log *zap.Logger, cfg Config) error {
	out := cfg.EtcdBinDir()
	if allExist(out, []string{"etcd"}) {
		log.Info("etcd binary cached", zap.String("version", EtcdVersion), zap.String("dir", out))
		return nil
	}
	start := time.Now()
	src := filepath.Join(cfg.CacheDir, "src", "etcd-"+EtcdVersion)
	log.Info("building etcd from source (cold build: ~2 min on 2 cores)", zap.String("version", EtcdVersion), zap.String("module", src))
	gomod := fmt.Sprintf("module detour.local/etcd-build\n\ngo 1.26\n\nrequire go.etcd.io/etcd/server/v3 %s\n\ntool go.etcd.io/etcd/server/v3\n", EtcdVersion)
	if err := writeScratchModule(ctx, src, gomod); err != nil {
		return err
	}
	tmp := filepath.Join(cfg.CacheDir, ".tmp", "etcd-"+EtcdVersion)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return fmt.Errorf("create build dir: %w", err)
	}
	if err := goCmd(ctx, log, src, "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(tmp, "etcd"), "go.etcd.io/etcd/server/v3"); err != nil {
		return fmt.Errorf("build etcd: %w", err)
	}
	if err := publish(tmp, out); err != nil {
		return err
	}
	log.Info("etcd built", zap.Duration("took", time.Since(start).Round(time.Second)), zap.String("dir", out))
	return nil
}

func ensureCoreDNS(ctx context.Context, log *zap.Logger, cfg Config) error {
	out := filepath.Dir(cfg.CoreDNSBinary())
	if allExist(out, []string{"coredns"}) {
		log.Info("coredns binary cached", zap.String("version", CoreDNSVersion), zap.String("dir", out))
		return nil
	}
	start := time.Now()
	src := filepath.Join(cfg.CacheDir, "src", "coredns-"+CoreDNSVersion)
	log.Info("building coredns from source (cold build: ~2 min on 2 cores)", zap.String("version", CoreDNSVersion),
		zap.Strings("plugins", CoreDNSPlugins), zap.String("module", src))
	if err := os.MkdirAll(src, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", src, err)
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(coreDNSMain()), 0o644); err != nil {
		return fmt.Errorf("write coredns main.go: %w", err)
	}
	gomod := fmt.Sprintf("module detour.local/coredns-build\n\ngo 1.26\n\nrequire github.com/coredns/coredns %s\n", CoreDNSVersion)
	if err := writeScratchModule(ctx, src, gomod); err != nil {
		return err
	}
	tmp := filepath.Join(cfg.CacheDir, ".tmp", "coredns-"+CoreDNSVersion)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return fmt.Errorf("create build dir: %w", err)
	}
	if err := goCmd(ctx, log, src, "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(tmp, "coredns"), "."); err != nil {
		return fmt.Errorf("build coredns: %w", err)
	}
	if err := publish(tmp, out); err != nil {
		return err
	}
	log.Info("coredns built", zap.Duration("took", time.Since(start).Round(time.Second)), zap.String("dir", out))
	return nil
}

// coreDNSMain is the scratch module's main package: CoreDNS's own main,
// with only CoreDNSPlugins imported and enabled, in upstream's order.
func coreDNSMain() string {
	var imports, names strings.Builder
	for _, p := range slices.Sorted(slices.Values(CoreDNSPlugins)) {
		fmt.Fprintf(&imports, "\t_ \"github.com/coredns/coredns/plugin/%s\"\n", p)
	}
	for _, p := range CoreDNSPlugins {
		fmt.Fprintf(&names, "%q, ", p)
	}
	return fmt.Sprintf(`// Command coredns is CoreDNS %s with only the plugins that detour's local
// cluster uses. Written by detour's tests/internal/cluster; do not edit.
package main

import (
	"log"
	"slices"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

%s)

var plugins = []string{%s}

// The execution order stays upstream's (plugin.cfg), limited to plugins.
func init() {
	var ds []string
	for _, d := range dnsserver.Directives {
		if slices.Contains(plugins, d) {
			ds = append(ds, d)
		}
	}
	if len(ds) != len(plugins) {
		log.Fatalf("directives %%v: not all of %%v are known", ds, plugins)
	}
	if err := dnsserver.SetDirectives(ds); err != nil {
		log.Fatal(err)
	}
}

func main() { coremain.Run() }
`, CoreDNSVersion, imports.String(), strings.TrimSuffix(names.String(), ", "))
}

// stagingModules reads the k8s.io/* modules that k8s.io/kubernetes replaces
// with its ./staging directory, from its own go.mod.
func stagingModules(ctx context.Context, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", "k8s.io/kubernetes@"+KubernetesVersion)
	cmd.Dir = dir
	cmd.Env = goEnv()
	outb, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("download k8s.io/kubernetes %s: %w", KubernetesVersion, err)
	}
	var info struct{ GoMod string }
	if err := json.Unmarshal(outb, &info); err != nil {
		return nil, fmt.Errorf("decode go mod download output: %w", err)
	}
	f, err := os.Open(info.GoMod)
	if err != nil {
		return nil, fmt.Errorf("open kubernetes go.mod: %w", err)
	}
	defer f.Close()
	re := regexp.MustCompile(`^\s*(k8s\.io/[A-Za-z0-9._-]+)\s+=>\s+\./staging/`)
	var mods []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			mods = append(mods, m[1])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read kubernetes go.mod: %w", err)
	}
	if len(mods) < 20 {
		return nil, fmt.Errorf("found only %d staging modules in %s", len(mods), info.GoMod)
	}
	return mods, nil
}

func writeScratchModule(ctx context.Context, dir, gomod string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	p := filepath.Join(dir, "go.mod")
	if old, err := os.ReadFile(p); err == nil && string(old) == gomod {
		if _, err := os.Stat(filepath.Join(dir, "go.sum")); err == nil {
			return nil // already resolved
		}
	}
	if err := os.WriteFile(p, []byte(gomod), 0o644); err != nil {
		return fmt.Errorf("write scratch go.mod: %w", err)
	}
	cmd := exec.CommandContext(ctx, "go", "mod", "tidy")
	cmd.Dir = dir
	cmd.Env = goEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go mod tidy in %s: %w: %s", dir, err, out)
	}
	return nil
}

func goEnv() []string {
	env := []string{"CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-buildvcs=false", "GOTOOLCHAIN=local"}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "CGO_ENABLED", "GOWORK", "GOFLAGS", "GOTOOLCHAIN", "GOOS", "GOARCH":
			continue
		}
		env = append(env, kv)
	}
	return env
}

func goCmd(ctx context.Context, log *zap.Logger, dir string, args ...string) error {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = goEnv()
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	log.Debug("go", zap.Strings("args", args), zap.String("dir", dir))
	// A cold build is silent for minutes: say that it is still going.
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		start := time.Now()
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				log.Info("still building", zap.String("module", filepath.Base(dir)), zap.Duration("elapsed", time.Since(start).Round(time.Second)))
			}
		}
	}()
	err := cmd.Run()
	close(done)
	<-finished
	if err != nil {
		return fmt.Errorf("go %s: %w", args[0], err)
	}
	return nil
}

// publish moves a finished build into the cache in one rename, so that an
// interrupted build never looks cached.
func publish(tmp, out string) error {
	if err := os.RemoveAll(out); err != nil {
		return fmt.Errorf("clear %s: %w", out, err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("create cache dir: %w", err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("publish %s: %w", out, err)
	}
	return nil
}
