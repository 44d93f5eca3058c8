//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/tests/internal/cluster"
)

// reachChecks are TestClusterNetwork's checks of what CMD reaches beyond
// names and HTTP: UDP, a 256 MiB transfer, the workstation's own
// 127.0.0.1, a destination a workload's owner allows, and the proxy
// fallback when the TUN is closed to the user — on the real cluster, as
// nobody.
func reachChecks(ctx context.Context, t *testing.T, cs kubernetes.Interface, dev *rootlessDev, ns string, dbPod, appPod *corev1.Pod) {
	fromApp := func(what string) string { return fmt.Sprintf("pod=%s peer=%s", what, appPod.Status.PodIP) }
	t.Run("udp leaves from the workload's pod", func(t *testing.T) {
		r := dev.run(t, "run", "--workload", "app", "--", dev.echo, "udp", net.JoinHostPort(dbPod.Status.PodIP, "9001"))
		if strings.TrimSpace(r.stdout) != fromApp(dbPod.Name) {
			t.Errorf("udp: want %q, got %s", fromApp(dbPod.Name), r)
		}
	})
	t.Run("256 MiB out and back through a Service", func(t *testing.T) {
		start := time.Now()
		r := dev.run(t, "run", "--workload", "app", "--", dev.echo, "bulk", fmt.Sprintf("db:%d", echoTCPPort), fmt.Sprint(256<<20))
		if r.code != 0 || strings.TrimSpace(r.stdout) != fmt.Sprintf("sha256 equal %d", 256<<20) {
			t.Fatalf("bulk: %s", r)
		}
		t.Logf("256 MiB each way in %s", time.Since(start).Round(time.Millisecond))
	})
	t.Run("the workstation's 127.0.0.1 where CMD does not listen", func(t *testing.T) {
		port := serveWorkstationHTTP(t)
		r := dev.run(t, "run", "--workload", "app", "--", dev.echo, "get", fmt.Sprintf("http://127.0.0.1:%d/", port))
		if want := "pod=workstation peer=127.0.0.1"; strings.TrimSpace(r.stdout) != want {
			t.Errorf("want %q, got %s", want, r)
		}
	})
	t.Run("the egress-allow annotation lets a destination through", func(t *testing.T) {
		addr := serveOnNode(t, dev.echo)
		deployEgressAllowed(ctx, t, cs, ns, "open", cluster.NodeIP+"/32")
		if r := dev.run(t, "run", "--workload", "open", "--", "true"); r.code != 0 { // opts it in: its agent comes
			t.Fatalf("detour run --workload open: %s", r)
		}
		open := secAgentPod(ctx, t, cs, ns, "app=open")
		if open.Annotations[annotations.EgressAllow] == "" {
			t.Fatalf("the agent's pod %s lacks the annotation", open.Name)
		}
		url := "http://" + addr + "/"
		also := cluster.NodeIP + "/32"
		var r result
		eventually(t, time.Minute, "the annotated workload's agent lets "+addr+" through", func() bool {
			r = dev.run(t, "run", "--workload", "open", "--also-proxy", also, "--", dev.echo, "get", url)
			return strings.TrimSpace(r.stdout) == fmt.Sprintf("pod=node peer=%s", open.Status.PodIP)
		})
		// The same destination from a workload without it: refused.
		r = dev.run(t, "run", "--workload", "app", "--also-proxy", also, "--", dev.echo, "get", url)
		if r.code == 0 || !strings.Contains(r.stderr, annotations.EgressAllow) {
			t.Errorf("without the annotation: %s", r)
		}
	})
	t.Run("the proxy fallback when /dev/net/tun is closed to the user", func(t *testing.T) {
		if err := os.Chmod("/dev/net/tun", 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod("/dev/net/tun", 0o666)
		// echo's get honours HTTP_PROXY (Go's default transport).
		r := dev.run(t, "run", "--workload", "app", "--", dev.echo, "get", "http://db/")
		if strings.TrimSpace(r.stdout) != fromApp(dbPod.Name) {
			t.Errorf("through the fallback: want %q, got %s", fromApp(dbPod.Name), r)
		}
		var lines []string
		for _, l := range strings.Split(r.stderr, "\n") {
			if strings.Contains(l, "proxy fallback") {
				lines = append(lines, l)
			}
		}
		if len(lines) != 1 || !strings.Contains(lines[0], "/dev/net/tun") || strings.Count(lines[0], "no usable TUN device") != 1 {
			t.Errorf("want one line naming /dev/net/tun and the fallback, the cause said once: %s", r)
		}
	})
}

// serveWorkstationHTTP serves on the workstation's 127.0.0.1 (outside any
// namespace of detour's) as a local database would, answering as echo does.
func serveWorkstationHTTP(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		w.Header().Set("X-Echo-Pod", "workstation")
		w.Header().Set("X-Echo-Peer", host)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// serveOnNode runs echo on the node's address, inside the cluster's
// network namespace: outside the pod and Service ranges, so an agent lets
// it through only where the workload's owner allows it.
func serveOnNode(t *testing.T, echo string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0") // a free port number; the node's address is in the other netns
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	addr := net.JoinHostPort(cluster.NodeIP, fmt.Sprint(port))
	cmd := exec.Command("nsenter", "--net="+cluster.NetnsPath, echo)
	cmd.Env = []string{"POD_NAME=node", "HTTP_ADDR=" + addr, "TCP_ADDR=" + cluster.NodeIP + ":0", "UDP_ADDR=" + cluster.NodeIP + ":0"}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return addr
}

// deployEgressAllowed is deployEcho with the egress-allow annotation on
// the pod template, once a pod with it is ready.
func deployEgressAllowed(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name, allow string) {
	t.Helper()
	deployEcho(ctx, t, cs, ns, name)
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{%q:%q}}}}}`, annotations.EgressAllow, allow)
	if _, err := cs.AppsV1().Deployments(ns).Patch(ctx, name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, name+" runs with the annotation", func() bool {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return false
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.Annotations[annotations.EgressAllow] == allow && p.DeletionTimestamp == nil && podReady(p) {
				return true
			}
		}
		return false
	})
}
