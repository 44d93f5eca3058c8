//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/tests/internal/images"
)

// TestInterceptSeveralPorts: one intercept takes both ports of a Service
// (http, a named targetPort, and tcp-echo, a numbered one) to two local
// servers; status lists each; one leave gives both back. Misused --port
// flags are refused before the workload changes, and another developer
// holding one of the ports fails the whole intercept, leaving neither
// port taken.
func TestInterceptSeveralPorts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cs := clientset(t, restConfig(t))
	alice, bob := newUser(t), newUser(t)
	alice.must("install", "--image", images.Detour)
	ns := createNamespace(ctx, t, cs, "ports")
	svc := deployWeb(ctx, t, cs, ns, "web", 1)
	httpURL := fmt.Sprintf("http://%s:80/", svc.Spec.ClusterIP)
	tcpAddr := net.JoinHostPort(svc.Spec.ClusterIP, fmt.Sprint(echoTCPPort))
	tcpURL := "http://" + tcpAddr + "/" // an HTTP request, relayed as raw bytes on the tcp port
	isApp := func(s string) bool { return strings.HasPrefix(s, "hello from web-") }
	eventually(t, time.Minute, "the Service answers before any intercept", func() bool { return isApp(who(httpURL)) })

	httpLocal, tcpLocal := localServer(t, "workstation-http"), localServer(t, "workstation-tcp")
	name := "web-" + ns
	both := []string{"intercept", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", httpLocal), "--port", fmt.Sprintf("%d:tcp-echo", tcpLocal)}

	for _, bad := range []struct {
		ports []string
		says  string
	}{
		{[]string{fmt.Sprintf("%d:http", httpLocal), fmt.Sprintf("%d:tcp-echo", httpLocal)}, fmt.Sprintf("both send to local port %d", httpLocal)},
		{[]string{fmt.Sprintf("%d:http", httpLocal), fmt.Sprintf("%d:80", tcpLocal)}, "both take Service port http (80) of web"},
		{[]string{fmt.Sprintf("%d:http", httpLocal), fmt.Sprint(tcpLocal)}, "each names its Service port"},
	} {
		args := []string{"intercept", "web", "-n", ns}
		for _, p := range bad.ports {
			args = append(args, "--port", p)
		}
		if r := alice.run(args...); r.code != 2 || !strings.Contains(r.stderr, bad.says) {
			t.Fatalf("detour %s: want exit 2 saying %q, got %s", strings.Join(args, " "), bad.says, r)
		}
	}
	d, err := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil || d.Spec.Template.Annotations[annotations.Inject] != "" {
		t.Fatalf("a refused --port changed the workload: %v %v", d.Spec.Template.Annotations, err)
	}

	t.Run("another developer's hold on one port fails the whole intercept", func(t *testing.T) {
		bob.must("intercept", "bobs", "--workload", "web", "-n", ns, "--port", fmt.Sprintf("%d:tcp-echo", localServer(t, "bob")))
		r := alice.run(both...)
		if r.code == 0 || !strings.Contains(r.stderr, "already intercepted globally by") {
			t.Fatalf("alice's intercept of a port bob holds: %s", r)
		}
		// Her http port, created on the agent before the refusal of the
		// other, was given back with the session.
		steadily(t, "http port after the refusal", 5, kubeProxyLag, func() string { return who(httpURL) }, isApp)
		if st := alice.must("status").stdout; !strings.Contains(st, "No active intercepts") && !strings.Contains(st, "not running") {
			t.Fatalf("alice holds something after the refusal:\n%s", st)
		}
		bob.must("leave", "bobs")
	})

	r := alice.must(append(both, "-o", "json")...)
	var created struct {
		Name  string `json:"name"`
		Ports []struct {
			PortName  string `json:"portName"`
			LocalAddr string `json:"localAddr"`
			AgentName string `json:"agentName"`
		} `json:"ports"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil {
		t.Fatalf("intercept -o json: %v\n%s", err, r)
	}
	if len(created.Ports) != 2 || created.Ports[0].PortName != "http" || created.Ports[1].PortName != "tcp-echo" ||
		created.Ports[1].LocalAddr != fmt.Sprintf("127.0.0.1:%d", tcpLocal) || created.Ports[1].AgentName != fmt.Sprintf("%s.%d", name, echoTCPPort) {
		t.Fatalf("intercept -o json ports: %+v\n%s", created.Ports, r.stdout)
	}
	steadily(t, "http port to its local server", 10, kubeProxyLag, func() string { return who(httpURL) }, func(s string) bool { return s == "workstation-http" })
	steadily(t, "tcp port to its local server", 10, kubeProxyLag, func() string { return who(tcpURL) }, func(s string) bool { return s == "workstation-tcp" })

	st := alice.must("status").stdout
	for _, want := range []string{name, "http (80)", fmt.Sprintf("tcp-echo (%d)", echoTCPPort), fmt.Sprintf("127.0.0.1:%d", httpLocal), fmt.Sprintf("127.0.0.1:%d", tcpLocal), "1/1 active"} {
		if !strings.Contains(st, want) {
			t.Errorf("status lacks %q:\n%s", want, st)
		}
	}

	alice.must("leave", name)
	steadily(t, "http port after leave", 5, kubeProxyLag, func() string { return who(httpURL) }, isApp)
	assertTCPEcho(ctx, t, tcpAddr, true)
	if st := alice.must("status").stdout; !strings.Contains(st, "No active intercepts") {
		t.Fatalf("status after one leave:\n%s", st)
	}
}
