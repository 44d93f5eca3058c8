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
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/detour-dev/detour/tests/internal/images"
)

// argoModule is Argo Rollouts' Go module.
const argoModule = "github.com/argoproj/argo-rollouts"

// ensureArgoRollouts builds the Argo Rollouts controller from its Go module
// into ArgoRolloutsDir, beside a copy of the module's manifests/crds. The
// scratch module carries the module's own replace directives (it pins the
// k8s.io/* modules to v0.34), which a requiring module would otherwise
// ignore.
func ensureArgoRollouts(ctx context.Context, log *zap.Logger, cfg Config) error {
	out := cfg.ArgoRolloutsDir()
	if allExist(out, []string{"rollouts-controller"}) {
		if _, err := os.Stat(filepath.Join(out, "crds", "rollout-crd.yaml")); err == nil {
			log.Info("argo rollouts controller cached", zap.String("version", ArgoRolloutsVersion), zap.String("dir", out))
			return nil
		}
	}
	start := time.Now()
	src := filepath.Join(cfg.CacheDir, "src", "argo-rollouts-"+ArgoRolloutsVersion)
	log.Info("building the argo rollouts controller from source (cold build: ~23 min on 2 cores)",
		zap.String("version", ArgoRolloutsVersion), zap.String("module", src))
	modDir, replaces, err := argoReplaces(ctx, src)
	if err != nil {
		return err
	}
	gomod := fmt.Sprintf("module detour.local/argo-rollouts-build\n\ngo 1.26\n\nrequire %s %s\n\ntool %s/cmd/rollouts-controller\n\nreplace (\n%s)\n",
		argoModule, ArgoRolloutsVersion, argoModule, replaces)
	if err := writeScratchModule(ctx, src, gomod); err != nil {
		return err
	}
	tmp := filepath.Join(cfg.CacheDir, ".tmp", "argo-rollouts-"+ArgoRolloutsVersion)
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("clear build dir: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(tmp, "crds"), 0o755); err != nil {
		return fmt.Errorf("create build dir: %w", err)
	}
	if err := goCmd(ctx, log, src, "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(tmp, "rollouts-controller"), argoModule+"/cmd/rollouts-controller"); err != nil {
		return fmt.Errorf("build argo rollouts: %w", err)
	}
	crds, err := filepath.Glob(filepath.Join(modDir, "manifests", "crds", "*-crd.yaml"))
	if err != nil || len(crds) == 0 {
		return fmt.Errorf("no CRDs in %s/manifests/crds: %v", modDir, err)
	}
	for _, c := range crds {
		b, err := os.ReadFile(c)
		if err != nil {
			return fmt.Errorf("read %s: %w", c, err)
		}
		if err := os.WriteFile(filepath.Join(tmp, "crds", filepath.Base(c)), b, 0o644); err != nil {
			return fmt.Errorf("copy %s: %w", c, err)
		}
	}
	if err := publish(tmp, out); err != nil {
		return err
	}
	log.Info("argo rollouts controller built", zap.Duration("took", time.Since(start).Round(time.Second)), zap.String("dir", out))
	return nil
}

// argoReplaces downloads the module and returns its directory and the
// replace directives of its go.mod, one per line.
func argoReplaces(ctx context.Context, dir string) (modDir, replaces string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("create %s: %w", dir, err)
	}
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", argoModule+"@"+ArgoRolloutsVersion)
	cmd.Dir = dir
	cmd.Env = goEnv()
	outb, err := cmd.Output()
	var info struct{ Dir, GoMod, Error string }
	if jerr := json.Unmarshal(outb, &info); jerr != nil || err != nil || info.Error != "" {
		return "", "", fmt.Errorf("download %s %s: %v %s", argoModule, ArgoRolloutsVersion, err, info.Error)
	}
	f, err := os.Open(info.GoMod)
	if err != nil {
		return "", "", fmt.Errorf("open argo rollouts go.mod: %w", err)
	}
	defer f.Close()
	re := regexp.MustCompile(`^\s*(\S+)\s+=>\s+(\S+)\s+(v\S+)\s*$`)
	var b strings.Builder
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "replace ("):
			in = true
		case in && strings.TrimSpace(line) == ")":
			in = false
		case in:
			if m := re.FindStringSubmatch(line); m != nil {
				fmt.Fprintf(&b, "\t%s => %s %s\n", m[1], m[2], m[3])
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", "", fmt.Errorf("read argo rollouts go.mod: %w", err)
	}
	if !strings.Contains(b.String(), "k8s.io/client-go =>") {
		return "", "", fmt.Errorf("no k8s.io replace directives in %s", info.GoMod)
	}
	return info.Dir, b.String(), nil
}

// argoNamespace is where the controller runs.
const argoNamespace = "argo-rollouts"

// argoManifest is the controller as upstream's install.yaml runs it, in
// short: its namespace, a ServiceAccount, and a Deployment of the image
// built from source. The ServiceAccount is bound to cluster-admin: this is
// a throwaway test cluster, and upstream's ClusterRole is long.
func argoManifest() string {
	return fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: %[1]s}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: argo-rollouts, namespace: %[1]s}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: detour-test-argo-rollouts}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects:
- {kind: ServiceAccount, name: argo-rollouts, namespace: %[1]s}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: argo-rollouts, namespace: %[1]s}
spec:
  replicas: 1
  selector:
    matchLabels: {app.kubernetes.io/name: argo-rollouts}
  template:
    metadata:
      labels: {app.kubernetes.io/name: argo-rollouts}
      annotations: {detour.dev/argo-rollouts-version: "%[2]s"}
    spec:
      serviceAccountName: argo-rollouts
      containers:
      - name: argo-rollouts
        image: %[3]s
        imagePullPolicy: Never
        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
          periodSeconds: 2
        securityContext:
          runAsNonRoot: true
          runAsUser: %[4]d
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
`, argoNamespace, ArgoRolloutsVersion, images.ArgoRollouts, images.NonRoot)
}

// DeployArgoRollouts applies Argo Rollouts' CRDs and its controller and
// waits until the controller is ready.
func DeployArgoRollouts(ctx context.Context, log *zap.Logger, cfg Config) error {
	t := time.Now()
	c, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	kubectl := filepath.Join(cfg.K8sBinDir(), "kubectl")
	crds := filepath.Join(cfg.ArgoRolloutsDir(), "crds")
	// Server-side: the Rollout CRD is too large for the last-applied annotation.
	if _, err := sh(c, kubectl, "--kubeconfig", cfg.AdminKubeconfig(), "apply", "--server-side", "--force-conflicts", "-f", crds); err != nil {
		return fmt.Errorf("apply argo rollouts CRDs: %w", err)
	}
	// Not `kubectl wait`: right after the create the CRD has no conditions
	// yet, and kubectl wait fails on that instead of waiting.
	established := func() bool {
		out, err := Kubectl(c, cfg, "get", "crd/rollouts.argoproj.io", "-o", `jsonpath={.status.conditions[?(@.type=="Established")].status}`)
		return err == nil && out == "True"
	}
	for !established() {
		select {
		case <-c.Done():
			return fmt.Errorf("argo rollouts CRD not established: %w", c.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
	if _, err := shIn(c, []byte(argoManifest()), kubectl, "--kubeconfig", cfg.AdminKubeconfig(), "apply", "-f", "-"); err != nil {
		return fmt.Errorf("apply argo rollouts controller: %w", err)
	}
	if _, err := sh(c, kubectl, "--kubeconfig", cfg.AdminKubeconfig(), "-n", argoNamespace, "rollout", "status", "deployment/argo-rollouts", "--timeout=150s"); err != nil {
		logs, _ := Kubectl(ctx, cfg, "-n", argoNamespace, "logs", "deployment/argo-rollouts", "--tail=30")
		return fmt.Errorf("argo rollouts controller not ready: %w\n%s", err, logs)
	}
	log.Info("argo rollouts controller ready", zap.String("version", ArgoRolloutsVersion), zap.Duration("took", time.Since(t).Round(time.Millisecond)))
	return nil
}
