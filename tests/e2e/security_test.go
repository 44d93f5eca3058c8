//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/detour-dev/detour/client/install"
	"github.com/detour-dev/detour/deploy"
	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/tests/internal/cluster"
	"github.com/detour-dev/detour/tests/internal/images"
)

// secSecret is the value deployWeb puts in its Secret-backed env var.
const secSecret = "s3cr3t-value"

// secWebhookSA is the webhook's ServiceAccount (deploy/base/serviceaccount.yaml).
const secWebhookSA = "detour-webhook"

// TestSecurity checks detour's security properties on the real cluster
// (issue 7 item 4): the agent's tunnel port cannot be reached from another
// pod; a user without pods/portforward gets an error naming it; the
// webhook's ServiceAccount holds exactly the permissions deploy/ grants, no
// wildcard; Secret values reach no log; the webhook refuses TLS < 1.2; the
// agent and webhook run as non-root on read-only root filesystems, and only
// the redirect-mode init container has a capability (NET_ADMIN).
//
// Needs root on the cluster's host: the pod-to-pod checks enter a pod's
// network namespace, and the runtime checks read /proc of the containers.
func TestSecurity(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatalf("TestSecurity needs root (it enters pod network namespaces and reads container processes in /proc)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cfg := restConfig(t)
	cs := clientset(t, cfg)
	start := time.Now()

	// Every CLI invocation's output is kept: none may show the Secret.
	var cliOut []string
	var devDaemonLog string // kept: the user's home goes with its subtest
	record := func(r result) result { cliOut = append(cliOut, r.stdout, r.stderr); return r }

	admin := newUser(t)
	record(admin.must("install", "--image", images.Detour))
	ns := createNamespace(ctx, t, cs, "sec")
	svc := deployWeb(ctx, t, cs, ns, "web", 1)
	// Opted in with a named targetPort: port-rename mode.
	echoPod := deployOptedInEcho(ctx, t, cs, ns, "echo", intstr.FromString("http"), true)
	// The intercept injects web: its Service has a numeric targetPort
	// (tcp-echo), so redirect mode. --env-file makes the agent read the
	// Secret-backed value and the daemon carry it.
	local := localServer(t, "workstation")
	envFile := filepath.Join(t.TempDir(), "web.env")
	record(admin.must("intercept", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", local), "--env-file", envFile))
	webPod := secAgentPod(ctx, t, cs, ns, "app=web")
	t.Logf("setup: web pod %s (%s), echo pod %s (%s), service %s, in %s", webPod.Name, webPod.Status.PodIP, echoPod.Name, echoPod.Status.PodIP, svc.Spec.ClusterIP, time.Since(start).Round(time.Millisecond))

	t.Run("AnotherUserCannotTakeOverAnIntercept", func(t *testing.T) {
		takeoverAttempt(ctx, t, cfg, cs, ns, webPod, fmt.Sprintf("http://%s/", net.JoinHostPort(svc.Spec.ClusterIP, "80")), "workstation")
	})
	t.Run("TunnelPortUnreachableFromAnotherPod", func(t *testing.T) {
		clientNS := createNamespace(ctx, t, cs, "sec-client")
		client, _ := deployEcho(ctx, t, cs, clientNS, "client")
		pid := secContainerPID(t, client, "echo")
		for _, c := range []struct {
			pod  *corev1.Pod
			want string // the app port's answer
		}{
			{webPod, "workstation"},                 // redirect mode, intercepted
			{echoPod, "hello from " + echoPod.Name}, // port-rename mode, passthrough
		} {
			ip := c.pod.Status.PodIP
			// The app port at the same IP answers, so the pod is reachable
			// from the client pod and the tunnel check below can fail.
			app := net.JoinHostPort(ip, strconv.Itoa(echoHTTPPort))
			conn, err := secDialFrom(pid, app)
			if err != nil {
				t.Fatalf("from pod %s/%s: app port %s: %v", clientNS, client.Name, app, err)
			}
			got, err := secHTTPGet(conn, app)
			if err != nil || got != c.want {
				t.Fatalf("from pod %s/%s: GET %s = %q, %v; want %q", clientNS, client.Name, app, got, err, c.want)
			}
			tunnel := net.JoinHostPort(ip, strconv.Itoa(annotations.TunnelPort))
			conn, err = secDialFrom(pid, tunnel)
			if err == nil {
				conn.Close()
				t.Fatalf("from pod %s/%s: the agent's tunnel port %s accepted a connection", clientNS, client.Name, tunnel)
			}
			var ne net.Error
			switch {
			case errors.Is(err, syscall.ECONNREFUSED):
			case errors.As(err, &ne) && ne.Timeout():
			default:
				t.Fatalf("from pod %s/%s: tunnel port %s: %v, want connection refused or a timeout", clientNS, client.Name, tunnel, err)
			}
			t.Logf("from another pod: %s answered %q; tunnel %s: %v", app, got, tunnel, err)
		}
		// The redirect listener takes a direct connection but relays it
		// nowhere: it closes (or resets, the request being unread) without
		// a byte.
		redirect := net.JoinHostPort(webPod.Status.PodIP, strconv.Itoa(annotations.RedirectPort))
		conn, err := secDialFrom(pid, redirect)
		if err != nil {
			t.Fatalf("redirect listener %s: %v", redirect, err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		b, err := io.ReadAll(conn)
		if len(b) != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
			t.Fatalf("direct connection to the redirect listener %s got %q, %v; want it closed without data", redirect, b, err)
		}
		t.Logf("direct connection to the redirect listener %s: closed without data (%v)", redirect, err)
	})

	t.Run("NoPortForwardPermission", func(t *testing.T) {
		const sa = "sec-dev"
		user := fmt.Sprintf("system:serviceaccount:%s:%s", ns, sa)
		if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// Everything `detour intercept` calls (client/internal/kube,
		// client/cli, client/internal/daemon) except pods/portforward.
		secGrant(ctx, t, cs, ns, "sec-detour-user", sa, []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"namespaces"}, ResourceNames: []string{ns}, Verbs: []string{"get"}},
			{APIGroups: []string{"apps"}, Resources: []string{"deployments", "replicasets", "statefulsets"}, Verbs: []string{"get", "list", "watch", "patch"}},
			{APIGroups: []string{""}, Resources: []string{"services", "endpoints"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch", "delete", "deletecollection"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"ingresses"}, Verbs: []string{"get", "list", "watch"}},
		})
		if secCan(ctx, t, cs, user, ns, "create", "pods", "portforward") {
			t.Fatalf("%s can create pods/portforward in %s before it was granted", user, ns)
		}
		tok, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: new(int64(600))}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("token request: %v", err)
		}
		dev := newUser(t)
		dev.kube = secKubeconfig(t, cfg, tok.Status.Token, ns)
		// The daemon retries a failed port-forward until agentArrival; keep it short.
		secWriteFile(t, filepath.Join(dev.home, "config", "detour", "config.yml"), "timeouts:\n  agentArrival: 10s\n")
		devLocal := localServer(t, "dev")

		began := time.Now()
		r := record(dev.run("intercept", "echo", "-n", ns, "--port", fmt.Sprintf("%d:http", devLocal)))
		t.Logf("intercept without pods/portforward (%s):\n%s", time.Since(began).Round(time.Millisecond), r)
		if r.code == 0 {
			t.Fatalf("intercept without pods/portforward succeeded:\n%s", r)
		}
		for _, want := range []string{"pods/portforward", "namespace " + ns, "kubectl auth can-i create pods/portforward -n " + ns} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("the error does not say %q:\n%s", want, r)
			}
		}
		// The same user with pods/portforward added intercepts: the Role
		// above held everything else.
		secGrant(ctx, t, cs, ns, "sec-portforward", sa, []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods/portforward"}, Verbs: []string{"create"}},
		})
		eventually(t, 10*time.Second, "the portforward grant takes effect", func() bool {
			return secCan(ctx, t, cs, user, ns, "create", "pods", "portforward")
		})
		r = record(dev.must("intercept", "echo", "-n", ns, "--port", fmt.Sprintf("%d:http", devLocal)))
		if !strings.Contains(r.stdout, fmt.Sprintf("Intercept %q is active", "echo-"+ns)) {
			t.Fatalf("intercept with pods/portforward:\n%s", r)
		}
		record(dev.must("leave", "echo-"+ns))
		d, err := os.ReadFile(filepath.Join(dev.home, "daemon.log"))
		if err != nil {
			t.Fatalf("daemon log: %v", err)
		}
		devDaemonLog = string(d)
	})

	t.Run("WebhookRBAC", func(t *testing.T) {
		secAssertWebhookRoles(ctx, t, cs)
		kubectl := filepath.Join(cluster.DefaultConfig().K8sBinDir(), "kubectl")
		as := fmt.Sprintf("system:serviceaccount:%s:%s", install.Namespace, secWebhookSA)
		// Granted to every ServiceAccount by Kubernetes v1.37's default
		// ClusterRoleBindings (system:basic-user, system:discovery,
		// system:public-info-viewer, system:service-account-issuer-discovery,
		// system:cluster-trust-bundle-discovery).
		base := []string{
			"selfsubjectreviews.authentication.k8s.io [] [] [create]",
			"selfsubjectaccessreviews.authorization.k8s.io [] [] [create]",
			"selfsubjectrulesreviews.authorization.k8s.io [] [] [create]",
			"clustertrustbundles.certificates.k8s.io [] [] [get list watch]",
		}
		for _, u := range []string{"/.well-known/openid-configuration/", "/.well-known/openid-configuration", "/api/*", "/api", "/apis/*", "/apis",
			"/healthz", "/livez", "/openapi/*", "/openapi", "/openid/v1/jwks/", "/openid/v1/jwks", "/readyz", "/version/", "/version"} {
			base = append(base, fmt.Sprintf(" [%s] [] [get]", u))
		}
		// deploy/base/rbac.yaml: the ClusterRole everywhere, the Role in
		// detour-system only.
		cluster := []string{
			"services [] [] [list watch]",
			"mutatingwebhookconfigurations.admissionregistration.k8s.io [] [detour-webhook] [get patch]",
			// Replace mode's restorer (docs/architecture.md, "Replace mode"):
			// the replaced pods (an informer), a pod's Deployment, and the
			// patch that gives a workload its app back.
			"pods [] [] [list watch]",
			"replicasets.apps [] [] [get]",
			"deployments.apps [] [] [get patch]",
			"statefulsets.apps [] [] [get patch]",
		}
		inSystem := []string{
			"secrets [] [] [create]",
			"secrets [] [detour-webhook-tls] [get update]",
		}
		for _, c := range []struct {
			ns   string
			want []string
		}{
			{install.Namespace, slices.Concat(base, cluster, inSystem)},
			{metav1.NamespaceDefault, slices.Concat(base, cluster)},
			{ns, slices.Concat(base, cluster)},
		} {
			out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", kubeconfigPath(), "auth", "can-i", "--list", "--as", as, "-n", c.ns).CombinedOutput()
			if err != nil {
				t.Fatalf("kubectl auth can-i --list --as %s -n %s: %v\n%s", as, c.ns, err, out)
			}
			got := secCanIRows(t, string(out))
			want := secSet(c.want)
			if extra, missing := secDiff(got, want), secDiff(want, got); len(extra)+len(missing) > 0 {
				t.Errorf("%s in namespace %s:\n extra permissions: %q\n missing: %q\nkubectl output:\n%s", as, c.ns, extra, missing, out)
			}
		}
	})

	t.Run("WebhookTLSRefusesBelow12", func(t *testing.T) {
		pods := secWebhookPods(ctx, t, cs)
		whSvc, err := cs.CoreV1().Services(install.Namespace).Get(ctx, "detour-webhook", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		addrs := []string{net.JoinHostPort(whSvc.Spec.ClusterIP, "443")}
		for _, p := range pods {
			addrs = append(addrs, net.JoinHostPort(p.Status.PodIP, "8443"))
		}
		for _, addr := range addrs {
			for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
				// MinVersion too: Go's client would otherwise refuse < 1.2
				// itself, and the check would pass without the server.
				cfg := &tls.Config{MinVersion: v, MaxVersion: v, InsecureSkipVerify: true}
				c, err := secTLSDial(addr, cfg)
				if err == nil {
					c.Close()
					t.Errorf("%s accepted a %s handshake", addr, tls.VersionName(v))
					continue
				}
				if !strings.Contains(err.Error(), "protocol version") {
					t.Errorf("%s with %s: %v, want the server's protocol_version alert", addr, tls.VersionName(v), err)
				}
				t.Logf("%s %s: %v", addr, tls.VersionName(v), err)
			}
			for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
				cfg := &tls.Config{MinVersion: v, MaxVersion: v, InsecureSkipVerify: true}
				c, err := secTLSDial(addr, cfg)
				if err != nil {
					t.Errorf("%s refused a %s handshake: %v", addr, tls.VersionName(v), err)
					continue
				}
				st := c.ConnectionState()
				c.Close()
				if st.Version != v || len(st.PeerCertificates) == 0 || !slices.Contains(st.PeerCertificates[0].DNSNames, "detour-webhook.detour-system.svc") {
					t.Errorf("%s: %s handshake gave version %s, certificate names %v", addr, tls.VersionName(v), tls.VersionName(st.Version), secDNSNames(st))
				}
			}
		}
	})

	t.Run("NonRootReadOnlyLeastCapabilities", func(t *testing.T) {
		// The agent sidecars (both modes) and the webhook, in the API and
		// in the running processes.
		type target struct {
			pod       *corev1.Pod
			container string
		}
		targets := []target{{webPod, annotations.AgentContainerName}, {echoPod, annotations.AgentContainerName}}
		for _, p := range secWebhookPods(ctx, t, cs) {
			targets = append(targets, target{p, "webhook"})
		}
		for _, tg := range targets {
			where := fmt.Sprintf("%s/%s container %s", tg.pod.Namespace, tg.pod.Name, tg.container)
			c := secContainer(tg.pod.Spec.Containers, tg.container)
			if c == nil {
				t.Fatalf("%s: no such container", where)
			}
			sc := c.SecurityContext
			psc := tg.pod.Spec.SecurityContext
			if sc == nil {
				t.Fatalf("%s: no securityContext", where)
			}
			uid := sc.RunAsUser
			if uid == nil && psc != nil {
				uid = psc.RunAsUser
			}
			switch {
			case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
				t.Errorf("%s: runAsNonRoot not true", where)
			case uid == nil || *uid == 0:
				t.Errorf("%s: runAsUser %v", where, uid)
			case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
				t.Errorf("%s: readOnlyRootFilesystem not true", where)
			case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
				t.Errorf("%s: allowPrivilegeEscalation not false", where)
			case sc.Privileged != nil && *sc.Privileged:
				t.Errorf("%s: privileged", where)
			case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0:
				t.Errorf("%s: capabilities %+v, want drop [ALL] and add none", where, sc.Capabilities)
			}
			// The running process: the image has no shell for `kubectl
			// exec id`, but its process is on this host.
			pr := secInspect(t, secContainerPID(t, tg.pod, tg.container))
			if pr.uids != [4]string{"65532", "65532", "65532", "65532"} || pr.capEff != 0 || pr.capPrm != 0 || pr.capBnd != 0 || !pr.noNewPrivs || !pr.rootReadOnly {
				t.Errorf("%s: running process %+v, want uid 65532, no capabilities, no_new_privs, read-only /", where, pr)
			}
			t.Logf("%s: spec uid %d, read-only root, drop ALL; process %+v", where, *uid, pr)
		}

		// Port-rename mode: no init container, nobody adds a capability.
		if len(echoPod.Spec.InitContainers) != 0 {
			t.Errorf("port-rename pod %s has init containers %v", echoPod.Name, secNames(echoPod.Spec.InitContainers))
		}
		for _, pod := range []*corev1.Pod{echoPod, webPod} {
			for _, c := range pod.Spec.Containers {
				if c.SecurityContext != nil && c.SecurityContext.Capabilities != nil && len(c.SecurityContext.Capabilities.Add) > 0 {
					t.Errorf("pod %s container %s adds %v", pod.Name, c.Name, c.SecurityContext.Capabilities.Add)
				}
			}
		}
		// Redirect mode: exactly one init container, NET_ADMIN and nothing
		// else, and it has finished.
		ic := webPod.Spec.InitContainers
		if len(ic) != 1 || ic[0].Name != annotations.InitContainerName {
			t.Fatalf("redirect pod %s init containers %v, want exactly [%s]", webPod.Name, secNames(ic), annotations.InitContainerName)
		}
		if sc := ic[0].SecurityContext; sc == nil || sc.Capabilities == nil ||
			!slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN"}) || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || (sc.Privileged != nil && *sc.Privileged) ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("init container %s securityContext %+v, want add [NET_ADMIN], drop [ALL], no escalation, read-only root", ic[0].Name, sc)
		}
		if st := webPod.Status.InitContainerStatuses; len(st) != 1 || st[0].State.Terminated == nil || st[0].State.Terminated.ExitCode != 0 {
			t.Errorf("init container status %+v, want terminated with 0", st)
		}
	})

	t.Run("SecretsNotLogged", func(t *testing.T) {
		// The env file legitimately holds the value: proof the agent read
		// it and the daemon carried it, so the logs below had the chance.
		b, err := os.ReadFile(envFile)
		if err != nil || !strings.Contains(string(b), "SECRET_VALUE="+secSecret+"\n") {
			t.Fatalf("env file %s lacks SECRET_VALUE=%s (%v)", envFile, secSecret, err)
		}
		needles := []string{secSecret, base64.StdEncoding.EncodeToString([]byte(secSecret))}
		sources := map[string]string{}
		for _, sel := range []string{"app=web", "app=echo"} {
			pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range pods.Items {
				for _, c := range slices.Concat(p.Spec.InitContainers, p.Spec.Containers) {
					if c.Name == annotations.AgentContainerName || c.Name == annotations.InitContainerName {
						sources["log of "+p.Name+"/"+c.Name] = secLogs(ctx, t, cs, &p, c.Name)
					}
				}
			}
		}
		for _, p := range secWebhookPods(ctx, t, cs) {
			sources["log of "+p.Name+"/webhook"] = secLogs(ctx, t, cs, p, "webhook")
		}
		for _, u := range []*user{admin} {
			d, err := os.ReadFile(filepath.Join(u.home, "daemon.log"))
			if err != nil {
				t.Fatalf("daemon log: %v", err)
			}
			sources["daemon log "+u.home] = string(d)
		}
		sources["daemon log of the user without pods/portforward"] = devDaemonLog
		// status prints the intercept's request back: scan it too.
		record(admin.must("status"))
		record(admin.must("status", "-o", "json"))
		sources["CLI output"] = strings.Join(cliOut, "\n")
		// The scan could fail: the web agent and the daemon did log the
		// intercept.
		if !strings.Contains(sources["log of "+webPod.Name+"/"+annotations.AgentContainerName], "web-"+ns) {
			t.Errorf("the web agent's log does not mention the intercept web-%s: nothing to scan?", ns)
		}
		if !strings.Contains(sources["daemon log "+admin.home], "web-"+ns) {
			t.Errorf("the daemon log does not mention the intercept web-%s: nothing to scan?", ns)
		}
		keys := make([]string, 0, len(sources))
		for k := range sources {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			for _, n := range needles {
				if i := strings.Index(sources[k], n); i >= 0 {
					t.Errorf("%s shows the Secret value (%q): …%s…", k, n, sources[k][max(0, i-200):min(len(sources[k]), i+len(n)+50)])
				}
			}
			t.Logf("%s: %d bytes, no Secret value", k, len(sources[k]))
		}
	})

	record(admin.must("leave", "web-"+ns))
	t.Logf("TestSecurity took %s", time.Since(start).Round(time.Millisecond))
}

// secAgentPod returns the Running pod of selector whose agent is ready.
func secAgentPod(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, selector string) *corev1.Pod {
	t.Helper()
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && hasAgent(p) && podReady(p) {
			return p
		}
	}
	t.Fatalf("no running pod with a ready agent for %s in %s\n%s", selector, ns, describePods(ctx, cs, ns))
	return nil
}

func secWebhookPods(ctx context.Context, t *testing.T, cs kubernetes.Interface) []*corev1.Pod {
	t.Helper()
	pods, err := cs.CoreV1().Pods(install.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=detour-webhook"})
	if err != nil {
		t.Fatal(err)
	}
	var out []*corev1.Pod
	for i := range pods.Items {
		if p := &pods.Items[i]; p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no running webhook pod\n%s", describePods(ctx, cs, install.Namespace))
	}
	return out
}

func secContainer(cs []corev1.Container, name string) *corev1.Container {
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	return nil
}

func secNames(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// secContainerPID finds the host PID of a running container's process: the
// cluster runs on this host, and with the cgroupfs driver the process's
// cgroup path ends with the container ID.
func secContainerPID(t *testing.T, pod *corev1.Pod, container string) int {
	t.Helper()
	var id string
	for _, s := range pod.Status.ContainerStatuses {
		if s.Name == container {
			_, id, _ = strings.Cut(s.ContainerID, "://")
		}
	}
	if id == "" {
		t.Fatalf("pod %s/%s: no container ID for %s", pod.Namespace, pod.Name, container)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	pids := []int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if err == nil && bytes.Contains(b, []byte("/"+id+"\n")) {
			pids = append(pids, pid)
		}
	}
	if len(pids) == 0 {
		t.Fatalf("pod %s/%s container %s (%s): no process on this host", pod.Namespace, pod.Name, container, id)
	}
	slices.Sort(pids)
	return pids[0]
}

// secDialFrom opens a TCP connection from inside the network namespace of
// process pid (a pod's), so the connection comes from that pod. The socket
// is made on a thread that switched namespaces and is then discarded.
func secDialFrom(pid int, addr string) (net.Conn, error) {
	type res struct {
		c   net.Conn
		err error
	}
	done := make(chan res, 1)
	go func() {
		// Never unlocked: the thread dies with this goroutine, so no other
		// goroutine ever runs in the pod's namespace.
		runtime.LockOSThread()
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			done <- res{nil, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- res{nil, fmt.Errorf("setns into pid %d: %w", pid, err)}
			return
		}
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		done <- res{c, err}
	}()
	r := <-done
	return r.c, r.err
}

// secHTTPGet sends one GET on conn and returns the trimmed body.
func secHTTPGet(conn net.Conn, host string) (string, error) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	req, err := http.NewRequest(http.MethodGet, "http://"+host+"/", nil)
	if err != nil {
		return "", err
	}
	req.Close = true
	if err := req.Write(conn); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s: %s", resp.Status, b)
	}
	return strings.TrimSpace(string(b)), err
}

// secGrant creates a Role with rules and binds it to the ServiceAccount.
func secGrant(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name, sa string, rules []rbacv1.PolicyRule) {
	t.Helper()
	if _, err := cs.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// secCan asks the API (SubjectAccessReview) whether user may verb
// resource/subresource in ns.
func secCan(ctx context.Context, t *testing.T, cs kubernetes.Interface, user, ns, verb, resource, sub string) bool {
	t.Helper()
	r, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:               user,
		Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Resource: resource, Subresource: sub},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r.Status.Allowed
}

// secKubeconfig writes a kubeconfig for the admin's cluster with a bearer
// token and namespace, and returns its path.
func secKubeconfig(t *testing.T, cfg *rest.Config, token, ns string) string {
	t.Helper()
	ca := cfg.TLSClientConfig.CAData
	if len(ca) == 0 && cfg.TLSClientConfig.CAFile != "" {
		var err error
		if ca, err = os.ReadFile(cfg.TLSClientConfig.CAFile); err != nil {
			t.Fatal(err)
		}
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["detour-e2e"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: ca}
	kc.AuthInfos["sec-dev"] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["sec-dev"] = &clientcmdapi.Context{Cluster: "detour-e2e", AuthInfo: "sec-dev", Namespace: ns}
	kc.CurrentContext = "sec-dev"
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func secWriteFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// secAssertWebhookRoles checks every Role and ClusterRole bound to the
// webhook's ServiceAccount: exactly the two of deploy/base/rbac.yaml, with
// the manifests' rules, and no wildcard.
func secAssertWebhookRoles(ctx context.Context, t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	want := secManifestRoles(t)
	isSA := func(subjects []rbacv1.Subject) bool {
		for _, s := range subjects {
			if s.Kind == rbacv1.ServiceAccountKind && s.Name == secWebhookSA && s.Namespace == install.Namespace {
				return true
			}
		}
		return false
	}
	got := map[string][]rbacv1.PolicyRule{}
	crbs, err := cs.RbacV1().ClusterRoleBindings().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range crbs.Items {
		if !isSA(b.Subjects) {
			continue
		}
		cr, err := cs.RbacV1().ClusterRoles().Get(ctx, b.RoleRef.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("ClusterRoleBinding %s: %v", b.Name, err)
		}
		if cr.AggregationRule != nil {
			t.Errorf("ClusterRole %s is aggregated: its rules can grow", cr.Name)
		}
		got["ClusterRole/"+cr.Name+" (ClusterRoleBinding "+b.Name+")"] = cr.Rules
	}
	rbs, err := cs.RbacV1().RoleBindings(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range rbs.Items {
		if !isSA(b.Subjects) {
			continue
		}
		var rules []rbacv1.PolicyRule
		switch b.RoleRef.Kind {
		case "Role":
			r, err := cs.RbacV1().Roles(b.Namespace).Get(ctx, b.RoleRef.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("RoleBinding %s/%s: %v", b.Namespace, b.Name, err)
			}
			rules = r.Rules
		default:
			r, err := cs.RbacV1().ClusterRoles().Get(ctx, b.RoleRef.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("RoleBinding %s/%s: %v", b.Namespace, b.Name, err)
			}
			rules = r.Rules
		}
		got[b.RoleRef.Kind+"/"+b.Namespace+"/"+b.RoleRef.Name+" (RoleBinding "+b.Name+")"] = rules
	}
	for name, rules := range got {
		for _, r := range rules {
			for _, field := range [][]string{r.Verbs, r.APIGroups, r.Resources, r.ResourceNames, r.NonResourceURLs} {
				for _, v := range field {
					if strings.Contains(v, "*") {
						t.Errorf("%s has a wildcard %q in rule %+v", name, v, r)
					}
				}
			}
		}
		t.Logf("%s: %d rules", name, len(rules))
	}
	gotKeys, wantKeys := secKeys(got), secKeys(want)
	if !slices.Equal(gotKeys, wantKeys) {
		t.Fatalf("roles bound to %s/%s: %q, want %q", install.Namespace, secWebhookSA, gotKeys, wantKeys)
	}
	for k, rules := range want {
		if !equality.Semantic.DeepEqual(got[k], rules) {
			t.Errorf("%s in the cluster: %+v\nin deploy/base/rbac.yaml: %+v", k, got[k], rules)
		}
	}
}

// secManifestRoles reads the Roles and ClusterRoles of deploy/base/rbac.yaml,
// keyed as secAssertWebhookRoles keys what it finds bound.
func secManifestRoles(t *testing.T) map[string][]rbacv1.PolicyRule {
	t.Helper()
	data, err := deploy.Base.ReadFile("base/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	type doc struct {
		Kind     string              `json:"kind"`
		Metadata metav1.ObjectMeta   `json:"metadata"`
		Rules    []rbacv1.PolicyRule `json:"rules"`
		RoleRef  rbacv1.RoleRef      `json:"roleRef"`
	}
	roles := map[string][]rbacv1.PolicyRule{}
	var bindings []doc
	rd := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		b, err := rd.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var d doc
		if err := yaml.Unmarshal(b, &d); err != nil {
			t.Fatal(err)
		}
		switch d.Kind {
		case "ClusterRole", "Role":
			roles[d.Kind+"/"+d.Metadata.Namespace+"/"+d.Metadata.Name] = d.Rules
		case "ClusterRoleBinding", "RoleBinding":
			bindings = append(bindings, d)
		}
	}
	out := map[string][]rbacv1.PolicyRule{}
	for _, b := range bindings {
		if b.Kind == "ClusterRoleBinding" {
			out["ClusterRole/"+b.RoleRef.Name+" (ClusterRoleBinding "+b.Metadata.Name+")"] = roles["ClusterRole//"+b.RoleRef.Name]
			continue
		}
		ns := b.Metadata.Namespace
		if b.RoleRef.Kind == "ClusterRole" {
			out["ClusterRole/"+ns+"/"+b.RoleRef.Name+" (RoleBinding "+b.Metadata.Name+")"] = roles["ClusterRole//"+b.RoleRef.Name]
		} else {
			out["Role/"+ns+"/"+b.RoleRef.Name+" (RoleBinding "+b.Metadata.Name+")"] = roles["Role/"+ns+"/"+b.RoleRef.Name]
		}
	}
	if len(out) != 2 {
		t.Fatalf("deploy/base/rbac.yaml: %d bindings, the test expects 2 (update it)", len(out))
	}
	return out
}

func secKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// secCanIRow is one row of `kubectl auth can-i --list`: an optional
// resource, then three bracketed lists.
var secCanIRow = regexp.MustCompile(`^(\S*)\s+(\[[^\]]*\])\s+(\[[^\]]*\])\s+(\[[^\]]*\])\s*$`)

// secCanIRows parses `kubectl auth can-i --list` into normalized rows
// "RESOURCE [URLS] [NAMES] [VERBS]" (RESOURCE empty for URL rows).
func secCanIRows(t *testing.T, out string) map[string]bool {
	t.Helper()
	rows := map[string]bool{}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "Resources") {
		t.Fatalf("kubectl auth can-i --list: no header:\n%s", out)
	}
	for _, l := range lines[1:] {
		m := secCanIRow.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("kubectl auth can-i --list: cannot read row %q", l)
		}
		rows[strings.Join(m[1:], " ")] = true
	}
	return rows
}

func secSet(rows []string) map[string]bool {
	out := map[string]bool{}
	for _, r := range rows {
		out[r] = true
	}
	return out
}

// secDiff lists what a has and b lacks.
func secDiff(a, b map[string]bool) []string {
	var out []string
	for k := range a {
		if !b[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func secTLSDial(addr string, cfg *tls.Config) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("tcp: %w", err)
	}
	tc := tls.Client(c, cfg)
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

func secDNSNames(st tls.ConnectionState) []string {
	if len(st.PeerCertificates) == 0 {
		return nil
	}
	return st.PeerCertificates[0].DNSNames
}

// secProc is what /proc says about a container's process.
type secProc struct {
	uids                   [4]string // real, effective, saved, filesystem
	capEff, capPrm, capBnd uint64
	noNewPrivs             bool
	rootReadOnly           bool
}

func secInspect(t *testing.T, pid int) secProc {
	t.Helper()
	var p secProc
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(l, ":")
		f := strings.Fields(v)
		switch k {
		case "Uid":
			copy(p.uids[:], f)
		case "CapEff", "CapPrm", "CapBnd":
			n, err := strconv.ParseUint(f[0], 16, 64)
			if err != nil {
				t.Fatalf("/proc/%d/status %s: %v", pid, k, err)
			}
			switch k {
			case "CapEff":
				p.capEff = n
			case "CapPrm":
				p.capPrm = n
			case "CapBnd":
				p.capBnd = n
			}
		case "NoNewPrivs":
			p.noNewPrivs = len(f) == 1 && f[0] == "1"
		}
	}
	mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mi), "\n") {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ...
		f := strings.Fields(l)
		if len(f) > 5 && f[4] == "/" {
			p.rootReadOnly = slices.Contains(strings.Split(f[5], ","), "ro")
		}
	}
	return p
}

func secLogs(ctx context.Context, t *testing.T, cs kubernetes.Interface, p *corev1.Pod, container string) string {
	t.Helper()
	raw, err := cs.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: container}).DoRaw(ctx)
	if err != nil {
		t.Fatalf("logs of %s/%s %s: %v", p.Namespace, p.Name, container, err)
	}
	return string(raw)
}
