//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/detour-dev/detour/tests/internal/images"
)

// nobody is the unprivileged user the client runs as.
const nobody = 65534

// TestClusterNetwork runs `detour run` as a developer would: an
// unprivileged OS user (nobody) with its own kubeconfig (a ServiceAccount
// token with only what detour needs), no capabilities, /dev/net/tun 0666
// as standard distributions ship it. CMD resolves the cluster's names
// exactly as a pod of the workload does, reaches a Service by name and by
// ClusterIP and a pod by its IP — each connection leaving from the
// workload's pod — gets a refusal for the metadata address and for a
// destination outside the cluster, and its exit code passes through; the
// workstation's routes, resolv.conf and nftables are byte for byte the
// same afterwards.
func TestClusterNetwork(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestClusterNetwork needs root (to set /dev/net/tun's mode and run the client as nobody)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cfg := restConfig(t)
	cs := clientset(t, cfg)
	admin := newUser(t)
	admin.must("install", "--image", images.Detour)
	ns := createNamespace(ctx, t, cs, "cnet")
	dbPod, dbSvc := deployEcho(ctx, t, cs, ns, "db")
	web := deployStatefulEcho(ctx, t, cs, ns, "web")
	deployEcho(ctx, t, cs, ns, "app")
	addAppFiles(ctx, t, cs, ns, "app")
	waitHostDNS(ctx, t, "web-0.web."+ns+".svc.cluster.local", web.Status.PodIP)

	dev := newRootlessDev(ctx, t, cs, cfg, ns)
	openTUNForAll(t)
	hostBefore := hostNetworkState(t)

	names := []string{"db", "db." + ns, "db." + ns + ".svc.cluster.local", "web-0.web." + ns + ".svc.cluster.local", "web." + ns, "kubernetes.default", "nosuch." + ns + ".svc.cluster.local", dbSvc.Spec.ClusterIP}
	t.Run("names resolve as inside the pod", func(t *testing.T) {
		inPod := parseLookups(t, runClientPod(ctx, t, cs, ns, append([]string{"dns"}, names...)))
		r := dev.run(t, append([]string{"run", "--workload", "app", "--", dev.echo, "dns"}, names...)...)
		if r.code != 0 {
			t.Fatalf("detour run: %s", r)
		}
		local := parseLookups(t, r.stdout)
		for _, n := range names {
			if local[n].result != inPod[n].result {
				t.Errorf("%s: detour run resolved %q, the pod %q", n, local[n].result, inPod[n].result)
			}
		}
		t.Logf("lookups through detour run:\n%s", r.stdout)
	})
	appPod := secAgentPod(ctx, t, cs, ns, "app=app")
	t.Run("connections leave from the workload's pod", func(t *testing.T) {
		port := dbSvc.Spec.Ports[0].Port
		for _, url := range []string{
			fmt.Sprintf("http://db:%d/", port),
			fmt.Sprintf("http://%s:%d/", dbSvc.Spec.ClusterIP, port),
			fmt.Sprintf("http://%s:%d/", dbPod.Status.PodIP, echoHTTPPort),
		} {
			want := fmt.Sprintf("pod=%s peer=%s", dbPod.Name, appPod.Status.PodIP)
			var r result
			eventually(t, kubeProxyLag, url+" answers", func() bool {
				r = dev.run(t, "run", "--workload", "app", "--", dev.echo, "get", url)
				return strings.TrimSpace(r.stdout) == want
			})
			t.Logf("%s: %s", url, strings.TrimSpace(r.stdout))
		}
	})
	t.Run("refusals name the rule", func(t *testing.T) {
		r := dev.run(t, "run", "--workload", "app", "--", dev.echo, "get", "http://169.254.169.254/")
		if r.code == 0 || !strings.Contains(r.stderr, "refused by the agent") || !strings.Contains(r.stderr, "metadata") {
			t.Errorf("metadata address: %s", r)
		}
		// Sent to the agent (--also-proxy), outside the cluster's ranges:
		// refused there, nothing leaves the machine.
		r = dev.run(t, "run", "--workload", "app", "--also-proxy", "192.0.2.0/24", "--", dev.echo, "get", "http://192.0.2.1/")
		if r.code == 0 || !strings.Contains(r.stderr, "detour.dev/egress-allow") {
			t.Errorf("non-cluster destination: %s", r)
		}
	})
	t.Run("the pod's files at their real paths, read with the user's permissions", func(t *testing.T) {
		script := `cat /etc/app-config/app.yaml; cat /etc/app-secret/password 2>/dev/null || echo no-secret-file
cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo token-ok
echo "pw=${APP_PASSWORD:-unset} greeting=$GREETING"`
		r := dev.run(t, "run", "--workload", "app", "--", "/bin/sh", "-c", script)
		want := "greeting: from-the-configmap\nno-secret-file\n" + ns + "\ntoken-ok\npw=unset greeting=hello-config\n"
		if r.code != 0 || r.stdout != want || !strings.Contains(r.stderr, "you lack get on secrets in namespace "+ns) {
			t.Fatalf("without get secrets: want stdout %q and a note naming the permission; got %s", want, r)
		}
		secGrant(ctx, t, cs, ns, "cnet-dev-secrets", "cnet-dev", []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}}})
		want = "greeting: from-the-configmap\ns3cret-value" + ns + "\ntoken-ok\npw=s3cret-value greeting=hello-config\n"
		eventually(t, 10*time.Second, "the secrets grant takes effect", func() bool {
			r = dev.run(t, "run", "--workload", "app", "--", "/bin/sh", "-c", script)
			return r.stdout == want
		})
	})
	t.Run("exit code passes through", func(t *testing.T) {
		if r := dev.run(t, "run", "--workload", "app", "--", "/bin/sh", "-c", "exit 7"); r.code != 7 {
			t.Errorf("exit code: %s", r)
		}
	})
	t.Run("intercept -- CMD serves the intercepted traffic from inside its namespace", func(t *testing.T) {
		appSvc, err := cs.CoreV1().Services(ns).Get(ctx, "app", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		url := fmt.Sprintf("http://%s:%d/", appSvc.Spec.ClusterIP, appSvc.Spec.Ports[0].Port)
		local := freePort(t)
		// CMD is the echo server, listening on 127.0.0.1:LOCAL inside its
		// own namespace only: the intercepted requests reach it there.
		// (POD_NAME is set inside: the app's own, the pod's name, is in
		// CMD's environment as in the pod.)
		cmd := dev.command(ctx, []string{fmt.Sprintf("HTTP_ADDR=127.0.0.1:%d", local), "TCP_ADDR=127.0.0.1:0"},
			"intercept", "app", "--port", fmt.Sprintf("%d:http", local), "--", "/bin/sh", "-c", "POD_NAME=cmd-in-namespace exec "+dev.echo)
		var errOut bytes.Buffer
		cmd.Stderr = &errOut
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			_ = cmd.Process.Signal(syscall.SIGTERM) // detour passes it to CMD, then leaves
			_ = cmd.Wait()
			if t.Failed() {
				t.Logf("detour intercept stderr:\n%s", errOut.String())
			}
		}()
		if !waitForSteady(t, url, "hello from cmd-in-namespace", 5, 2*time.Minute) {
			t.FailNow()
		}
	})
	reachChecks(ctx, t, cs, dev, ns, dbPod, appPod)
	if after := hostNetworkState(t); after != hostBefore {
		t.Errorf("the workstation's network changed:\nbefore:\n%s\nafter:\n%s", hostBefore, after)
	}
}

// rootlessDev is a developer account: OS user nobody, a kubeconfig with a
// ServiceAccount token holding only what detour run needs.
type rootlessDev struct {
	dir, bin, echo, kube, resolv string
}

func newRootlessDev(ctx context.Context, t *testing.T, cs kubernetes.Interface, cfg *rest.Config, ns string) *rootlessDev {
	t.Helper()
	const sa = "cnet-dev"
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	secGrant(ctx, t, cs, ns, "cnet-dev", sa, []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"namespaces"}, ResourceNames: []string{ns}, Verbs: []string{"get"}},
		{APIGroups: []string{"apps"}, Resources: []string{"deployments", "replicasets", "statefulsets"}, Verbs: []string{"get", "list", "watch", "patch"}},
		{APIGroups: []string{""}, Resources: []string{"services", "endpoints"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch", "delete", "deletecollection"}},
		{APIGroups: []string{""}, Resources: []string{"pods/portforward"}, Verbs: []string{"create"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"ingresses"}, Verbs: []string{"get", "list", "watch"}},
		// The pod's files: ConfigMaps and a token, but no Secrets (granted
		// later by the files subtest, to show both sides).
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"serviceaccounts/token"}, Verbs: []string{"create"}},
	})
	tok, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: new(int64(1800))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token request: %v", err)
	}
	dir, err := os.MkdirTemp("", "detour-rootless-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	d := &rootlessDev{dir: dir, bin: filepath.Join(dir, "detour"), echo: filepath.Join(dir, "echo"), kube: filepath.Join(dir, "kubeconfig"), resolv: filepath.Join(dir, "resolv.conf")}
	copyFile(t, detourBinary(t), d.bin, 0o755)
	copyFile(t, secKubeconfig(t, cfg, tok.Status.Token, ns), d.kube, 0o644)
	build := exec.Command("go", "build", "-o", d.echo, "github.com/detour-dev/detour/tests/images/echo")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build echo: %v\n%s", err, out)
	}
	// The daemon's directory (intercept), the user's own, 0700.
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o700); err != nil || os.Chown(home, nobody, nobody) != nil {
		t.Fatalf("daemon home: %v", err)
	}
	t.Cleanup(func() { _ = d.command(context.Background(), nil, "quit").Run() })
	// The workstation's resolvers for names outside the cluster: loopback,
	// where nothing answers — no lookup leaves the machine.
	if err := os.WriteFile(d.resolv, []byte("nameserver 127.0.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(dst, mode)
}

// command prepares the detour CLI to run as nobody, with env added.
func (d *rootlessDev) command(ctx context.Context, env []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, d.bin, args...)
	cmd.Dir = d.dir
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + d.dir, "KUBECONFIG=" + d.kube, "XDG_CONFIG_HOME=" + filepath.Join(d.dir, "config"),
		"DETOUR_HOME=" + filepath.Join(d.dir, "home"), "DETOUR_WORKSTATION_RESOLV_CONF=" + d.resolv}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	return cmd
}

// run runs the detour CLI as nobody.
func (d *rootlessDev) run(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := d.command(ctx, nil, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errOut.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run detour %v as nobody: %v", args, err)
	}
	return r
}

// openTUNForAll sets /dev/net/tun to 0666, as standard distributions ship
// it (this machine's is 0600), and restores the mode afterwards.
func openTUNForAll(t *testing.T) {
	t.Helper()
	fi, err := os.Stat("/dev/net/tun")
	if err != nil {
		t.Fatalf("no /dev/net/tun: %v", err)
	}
	old := fi.Mode().Perm()
	if err := os.Chmod("/dev/net/tun", 0o666); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod("/dev/net/tun", old) })
}

// hostNetworkState is what detour must not change on the workstation.
func hostNetworkState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, c := range [][]string{{"ip", "route", "show", "table", "all"}, {"ip", "-6", "route", "show", "table", "all"}, {"nft", "-s", "list", "ruleset"}} {
		out, err := exec.Command(c[0], c[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		b.Write(out)
	}
	resolv, _ := os.ReadFile("/etc/resolv.conf")
	b.Write(resolv)
	return b.String()
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// addAppFiles gives the workload what real apps read: a ConfigMap and a
// Secret as files and as variables, and a service-account token.
func addAppFiles(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name string) {
	t.Helper()
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name + "-config"},
		Data: map[string]string{"app.yaml": "greeting: from-the-configmap\n", "greeting": "hello-config"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name + "-secret"},
		StringData: map[string]string{"password": "s3cret-value"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec := &d.Spec.Template.Spec
	expiry := int64(3600)
	spec.Volumes = append(spec.Volumes,
		corev1.Volume{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: name + "-config"}, Items: []corev1.KeyToPath{{Key: "app.yaml", Path: "app.yaml"}}}}},
		corev1.Volume{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: name + "-secret"}}},
		corev1.Volume{Name: "token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: &expiry}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}},
		}}}},
	)
	c := &spec.Containers[0]
	c.VolumeMounts = append(c.VolumeMounts,
		corev1.VolumeMount{Name: "config", MountPath: "/etc/app-config", ReadOnly: true},
		corev1.VolumeMount{Name: "secret", MountPath: "/etc/app-secret", ReadOnly: true},
		corev1.VolumeMount{Name: "token", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true},
	)
	c.Env = append(c.Env,
		corev1.EnvVar{Name: "APP_PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name + "-secret"}, Key: "password"}}},
		corev1.EnvVar{Name: "GREETING", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name + "-config"}, Key: "greeting"}}},
	)
	if _, err := cs.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}
