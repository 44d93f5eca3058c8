// Command clusterdemo is detour's main demo (`make demo`): on the local
// Kubernetes cluster built from source (tests/cluster), it installs detour,
// deploys a data store (etcd, Service "store") and a two-replica sample app
// that answers with what the store holds, builds a local version of the app
// and starts it with `detour intercept … -- CMD`: a personal (http)
// intercept whose command sees the cluster as the pod does, so the local
// version reads the same store by its DNS name. It shows a request with the
// header answered by this machine beside one without it answered by the
// cluster, the imported environment, a preview URL and status; then it
// stops the local version (detour leaves) and shows the traffic back at the
// cluster. The cluster stays up afterwards, for you to keep playing.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/detour-dev/detour/tests/internal/cluster"
	"github.com/detour-dev/detour/tests/internal/images"
)

const (
	namespace = "detour-demo"
	appName   = "hello"
	appPort   = 8080
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	bin := flag.String("bin", "bin", "where make build put detour and detour-agent")
	flag.Parse()
	if err := run(ctx, *bin); err != nil {
		fmt.Fprintln(os.Stderr, "\ndemo:", err)
		os.Exit(1)
	}
}

func say(format string, a ...any) { fmt.Printf("\n==> "+format+"\n", a...) }

// demo is the state the steps share.
type demo struct {
	cs         kubernetes.Interface
	u          *cli
	cfg        cluster.Config
	kubeconfig string
	home       string
	ingress    string // the sample app's ClusterIP
	url        string // the sample app's Service, http://ClusterIP/
	greeting   string // what the store holds
	localBin   string // the local version of the app
	local      *background
	header     [2]string
	preview    string
}

func run(ctx context.Context, bin string) error {
	detour, err := filepath.Abs(filepath.Join(bin, "detour"))
	if err != nil {
		return err
	}
	if _, err := os.Stat(detour); err != nil {
		return fmt.Errorf("%s: %w (run make build)", detour, err)
	}
	d := &demo{cfg: cluster.DefaultConfig()}
	if err := d.up(ctx); err != nil {
		return err
	}
	if d.home, err = os.MkdirTemp("", "detour-demo-home-"); err != nil {
		return err
	}
	defer os.RemoveAll(d.home)
	if d.u, err = newCLI(detour, d.kubeconfig, d.home); err != nil {
		return err
	}
	defer d.u.run(context.WithoutCancel(ctx), "quit")
	defer d.stopLocal()
	for _, step := range []func(context.Context) error{
		d.install, d.deployStore, d.deployApp, d.buildLocal, d.intercept, d.sideBySide, d.showEnv, d.showPreview, d.status, d.leave,
	} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	d.done(filepath.Dir(detour))
	return nil
}

func (d *demo) up(ctx context.Context) error {
	say("Bringing up the local Kubernetes cluster (first run: builds Kubernetes %s, etcd and CoreDNS from source, ~20 min on 2 cores; later runs reuse %s)", cluster.KubernetesVersion, d.cfg.CacheDir)
	if err := cluster.Up(ctx, progressLogger(), d.cfg); err != nil {
		return fmt.Errorf("cluster up: %w (make cluster-down cleans up a half-started cluster)", err)
	}
	d.kubeconfig = d.cfg.AdminKubeconfig()
	rc, err := clientcmd.BuildConfigFromFlags("", d.kubeconfig)
	if err != nil {
		return err
	}
	d.cs, err = kubernetes.NewForConfig(rc)
	return err
}

func (d *demo) install(ctx context.Context) error {
	say("Installing detour into the cluster: detour install")
	_, err := d.u.show(ctx, "install", "--image", images.Detour)
	return err
}

func (d *demo) deployStore(ctx context.Context) error {
	say("Deploying the app's data store in namespace %s: etcd (the cluster's own etcd binary, as image %s), Service %q port %d, data in an emptyDir", namespace, images.Etcd, storeName, storePort)
	if err := freshStart(ctx, d.cs); err != nil {
		return err
	}
	if err := deployStore(ctx, d.cs); err != nil {
		return fmt.Errorf("the store never became ready: %w", err)
	}
	d.greeting = "hello from the cluster's etcd, written at " + time.Now().Format("15:04:05")
	fmt.Printf("    store ready; a one-shot pod writes %s into it, by the Service's name:\n", storeKey)
	fmt.Printf("    pod %s: /echo put %s %s %q\n", seedName, storeURL, storeKey, d.greeting)
	out, err := seedStore(ctx, d.cs, d.greeting)
	if err != nil {
		return err
	}
	fmt.Printf("      %s\n", out)
	return nil
}

func (d *demo) deployApp(ctx context.Context) error {
	say("Deploying the sample app %q (2 replicas) and its Service; it reads %q from STORE_URL=%s on every request", appName, storeKey, storeURL)
	svc, err := deploySample(ctx, d.cs)
	if err != nil {
		return err
	}
	d.ingress = svc.Spec.ClusterIP
	d.url = fmt.Sprintf("http://%s/", d.ingress)
	if err := waitFor(ctx, 2*time.Minute, func() bool { return isApp(get(d.url)) && strings.Contains(get(d.url), d.greeting) }); err != nil {
		return fmt.Errorf("the sample app never answered with the store's value at %s (last: %q): %w", d.url, get(d.url), err)
	}
	fmt.Printf("    curl %s  →  %s\n", d.url, get(d.url))
	return nil
}

func (d *demo) buildLocal(ctx context.Context) error {
	say("Building a local version of the app for this machine (the same code; your changes would go here)")
	dir, err := demoDir(d.cfg.StateDir)
	if err != nil {
		return err
	}
	d.localBin = filepath.Join(dir, appName)
	return buildLocal(ctx, d.cfg.RepoDir, d.localBin)
}

func (d *demo) intercept(ctx context.Context) error {
	say("Personal intercept, with the local version as its command: only requests with your header reach it, and\n" +
		"    detour intercept … -- CMD runs CMD with the pod's view of the cluster: the pod's DNS (\"store\" resolves), its\n" +
		"    Services dialled from the pod, the app's environment (STORE_URL). Rootless by design: CMD gets its own user and\n" +
		"    network namespaces and a TUN device; this demo runs detour as root, which may open this machine's /dev/net/tun\n" +
		"    (mode 0600 here; standard distributions ship it 0666 for every user)")
	port, err := freePort()
	if err != nil {
		return err
	}
	args := []string{"intercept", appName, "-n", namespace, "--port", fmt.Sprintf("%d:http", port),
		"--http-match", "auto", "--env-file", d.envFile(),
		"--preview-url", "--ingress-host", d.ingress, "--ingress-port", "80", "--"}
	if d.local, err = d.u.start(append(args, localCommand(d.localBin, port)...)...); err != nil {
		return err
	}
	if err := d.local.waitOutput(ctx, "Leave with:", 5*time.Minute); err != nil {
		return err
	}
	out := d.local.output()
	header := regexp.MustCompile(`(?m)^\s+header:\s+(\S+): (\S+)$`).FindStringSubmatch(out)
	preview := regexp.MustCompile(`(?m)^\s+preview:\s+(\S+)$`).FindStringSubmatch(out)
	if header == nil || preview == nil {
		return errors.New("the intercept summary lacks the header or the preview URL")
	}
	d.header, d.preview = [2]string{header[1], header[2]}, preview[1]
	return d.local.waitOutput(ctx, "echo: pod "+localName, time.Minute) // the local version is listening
}

func (d *demo) sideBySide(ctx context.Context) error {
	say("Side by side: the same Service, with and without your header; both read the same store")
	h := d.header
	withHeader, without := "", ""
	// kube-proxy and the agents need a moment after the rollout, and the
	// local version a moment to start.
	if err := waitFor(ctx, time.Minute, func() bool {
		withHeader, without = get(d.url, h[0], h[1]), get(d.url)
		return strings.HasPrefix(withHeader, "hello from "+localName) && strings.Contains(withHeader, d.greeting) && isApp(without)
	}); err != nil {
		return fmt.Errorf("routing did not settle: with header %q, without %q", withHeader, without)
	}
	for i := 0; i < 3; i++ {
		fmt.Printf("    curl -H '%s: %s' %s  →  %s\n", h[0], h[1], d.url, get(d.url, h[0], h[1]))
		fmt.Printf("    curl %s %s→  %s\n", d.url, strings.Repeat(" ", len(h[0])+len(h[1])+8), get(d.url))
	}
	fmt.Printf("    (%s: the local version resolved %q and reached etcd through the pod)\n", localName, storeName)
	return nil
}

func (d *demo) envFile() string { return filepath.Join(d.home, "hello.env") }

func (d *demo) showEnv(context.Context) error {
	say("The app's environment, imported into %s (ConfigMap and Secret values resolved; the local version got it too)", d.envFile())
	b, err := os.ReadFile(d.envFile())
	if err != nil {
		return err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		fmt.Println("    " + line)
	}
	return nil
}

func (d *demo) showPreview(context.Context) error {
	say("Preview URL: opened in any browser, it routes that browser to this machine (a cookie), no header plugin")
	fmt.Printf("    %s\n", d.preview)
	fmt.Printf("    opening it    →  %s\n", get(d.preview))
	return nil
}

func (d *demo) status(ctx context.Context) error {
	say("detour status")
	_, err := d.u.show(ctx, "status")
	return err
}

func (d *demo) leave(ctx context.Context) error {
	say("Leaving: Ctrl-C in the intercept's terminal (here: SIGINT to detour) stops the local version, and detour leaves")
	err := d.local.interrupt()
	d.local = nil
	if err != nil {
		return fmt.Errorf("stopping detour intercept: %w", err)
	}
	h := d.header
	if err := waitFor(ctx, 30*time.Second, func() bool { return isApp(get(d.url, h[0], h[1])) }); err != nil {
		return errors.New("the traffic did not come back to the cluster after leave")
	}
	fmt.Printf("    curl -H '%s: %s' %s  →  %s\n", h[0], h[1], d.url, get(d.url, h[0], h[1]))
	return nil
}

// stopLocal stops a local version still running when a step failed.
func (d *demo) stopLocal() {
	if d.local != nil {
		_ = d.local.interrupt()
	}
}

func (d *demo) done(binDir string) {
	say("Done. The cluster is still up; keep playing:")
	fmt.Printf(`    export KUBECONFIG=%[1]s PATH=%[2]s:$PATH
    detour intercept %[3]s -n %[4]s --port 8000:http --http-match x-dev=me \
        -- env POD_NAME=me HTTP_ADDR=127.0.0.1:8000 %[5]s   # the local version, as the demo ran it
    curl -H 'x-dev: me' %[6]s                         # (another terminal) → hello from me; store says: …
    detour run -n %[4]s --workload %[3]s -- curl -s %[7]s/version   # any command, with the pod's view
    detour intercept %[3]s -n %[4]s --port 8000:http --http-match x-dev=me   # no CMD: serve 8000 yourself
    detour status          # your intercepts, per pod
    detour leave %[3]s-%[4]s
    detour quit            # stop the background daemon
    make cluster-down      # remove the cluster (the built binaries stay cached)
`, d.kubeconfig, binDir, appName, namespace, d.localBin, d.url, storeURL)
}

// cli runs the real detour binary as a user would, with the demo's own
// daemon home and config.
type cli struct {
	bin string
	env []string
}

// newCLI gives detour its own home, and a workstation resolver on loopback:
// names outside the cluster, which CMD's resolver would ask the
// workstation's nameservers, stay on this machine (the demo resolves only
// cluster names; nothing it does may leave the machine).
func newCLI(bin, kubeconfig, home string) (*cli, error) {
	resolv := filepath.Join(home, "workstation-resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 127.0.0.1\n"), 0o644); err != nil {
		return nil, err
	}
	return &cli{bin: bin, env: []string{"KUBECONFIG=" + kubeconfig, "DETOUR_HOME=" + home,
		"XDG_CONFIG_HOME=" + filepath.Join(home, "config"), "DETOUR_WORKSTATION_RESOLV_CONF=" + resolv}}, nil
}

func (c *cli) run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Env = append(os.Environ(), c.env...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr // rollout progress
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("detour %s: %w", strings.Join(args, " "), err)
	}
	return out.String(), nil
}

// show prints the command and its output, indented.
func (c *cli) show(ctx context.Context, args ...string) (string, error) {
	fmt.Printf("    $ detour %s\n", shellJoin(args))
	out, err := c.run(ctx, args...)
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if line != "" {
			fmt.Println("      " + line)
		}
	}
	return out, err
}

// isApp reports an answer from the app's pods in the cluster.
func isApp(answer string) bool { return strings.HasPrefix(answer, "hello from "+appName+"-") }

func get(url string, header ...string) string {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err.Error()
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

func waitFor(ctx context.Context, within time.Duration, cond func() bool) error {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return nil
}

// createRetrying creates an object, retrying for a minute while an earlier
// run's object of the same name is still going away.
func createRetrying(ctx context.Context, what string, create func() error) error {
	var err error
	if werr := waitFor(ctx, time.Minute, func() bool { err = create(); return err == nil }); werr != nil {
		return fmt.Errorf("create %s: %w", what, err)
	}
	return nil
}

// progressLogger prints the cluster's build and start steps as progress.
func progressLogger() *zap.Logger {
	enc := zap.NewDevelopmentEncoderConfig()
	enc.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05")
	enc.EncodeLevel = zapcore.CapitalLevelEncoder
	return zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(os.Stdout), zapcore.InfoLevel))
}
