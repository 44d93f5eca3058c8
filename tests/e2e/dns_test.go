//go:build e2e

package e2e

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/detour-dev/detour/tests/internal/cluster"
	"github.com/detour-dev/detour/tests/internal/dnsquery"
)

// notFoundWithin bounds a lookup that must fail: an NXDOMAIN is immediate,
// a resolver waiting on a server that never answers takes 5 s or more.
const notFoundWithin = 2 * time.Second

// TestClusterDNS resolves names from inside pods, as an application does
// (the kubelet's resolv.conf: the kube-dns Service, the namespace's search
// path, ndots:5): a Service by its short name, name.namespace and FQDN; a
// StatefulSet pod by its name under the headless Service; PTRs of the
// ClusterIP and of the pod IP; and names and addresses that do not exist,
// in the cluster or outside it, get an NXDOMAIN at once (there is no
// upstream; nothing leaves the machine, which TestMain's guard check
// confirms). Once over UDP, once over TCP (use-vc in the pod's resolver
// options).
func TestClusterDNS(t *testing.T) {
	cs := clientset(t, restConfig(t))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	ns := createNamespace(ctx, t, cs, "detour-e2e-dns")
	_, svc := deployEcho(ctx, t, cs, ns, "echo")
	web := deployStatefulEcho(ctx, t, cs, ns, "web")
	fqdn := "echo." + ns + ".svc.cluster.local"
	podName := "web-0.web." + ns + ".svc.cluster.local"
	waitHostDNS(ctx, t, podName, web.Status.PodIP)

	want := map[string]string{
		"echo":                                   svc.Spec.ClusterIP,
		"echo." + ns:                             svc.Spec.ClusterIP,
		fqdn:                                     svc.Spec.ClusterIP,
		podName:                                  web.Status.PodIP,
		"web." + ns:                              web.Status.PodIP, // headless: the pods' IPs
		"kubernetes.default":                     cluster.APIServerSvcIP,
		svc.Spec.ClusterIP:                       fqdn + ".",
		web.Status.PodIP:                         podName + ".",
		"nosuch." + ns + ".svc.cluster.local":    "notfound NXDOMAIN",
		"nosuch-name":                            "notfound NXDOMAIN",
		"example.com":                            "notfound NXDOMAIN",
		"192.0.2.1":                              "notfound NXDOMAIN", // a PTR the kubernetes plugin passes on
		"web-9.web." + ns + ".svc.cluster.local": "notfound NXDOMAIN",
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, transport := range []string{"UDP", "TCP"} {
		t.Run(transport, func(t *testing.T) {
			var edits []func(*corev1.Pod)
			if transport == "TCP" {
				edits = append(edits, func(p *corev1.Pod) {
					p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: []corev1.PodDNSConfigOption{{Name: "use-vc"}}}
				})
			}
			got := parseLookups(t, runClientPod(ctx, t, cs, ns, append([]string{"dns"}, names...), edits...))
			for _, n := range names {
				checkLookup(t, n, got[n], want[n])
			}
		})
	}
}

// lookup is one line of the echo image's dns mode.
type lookup struct {
	took   time.Duration
	result string
}

func parseLookups(t *testing.T, logs string) map[string]lookup {
	t.Helper()
	got := map[string]lookup{}
	for _, line := range strings.Split(logs, "\n") {
		f := strings.SplitN(line, "\t", 4)
		if len(f) != 4 || f[0] != "dns" {
			continue
		}
		took, err := time.ParseDuration(f[2])
		if err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		got[f[1]] = lookup{took: took, result: f[3]}
	}
	return got
}

func checkLookup(t *testing.T, name string, got lookup, want string) {
	t.Helper()
	switch {
	case got.result != want:
		t.Errorf("%s: got %q (in %s), want %q", name, got.result, got.took, want)
	case strings.HasPrefix(want, "notfound") && got.took > notFoundWithin:
		t.Errorf("%s: %s took %s, want under %s", name, got.result, got.took, notFoundWithin)
	default:
		t.Logf("%-50s %-45s %s", name, got.result, got.took)
	}
}

// deployStatefulEcho creates a headless Service and a one-replica
// StatefulSet of the echo image governed by it, both called name, and
// returns the pod name-0 once it is Running and Ready.
func deployStatefulEcho(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name string) *corev1.Pod {
	t.Helper()
	labels := map[string]string{"app": name}
	one := int32(1)
	if _, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: labels,
			Ports: []corev1.ServicePort{{Name: "http", Port: echoHTTPPort, TargetPort: intstr.FromInt32(echoHTTPPort)}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create headless service: %v", err)
	}
	if _, err := cs.AppsV1().StatefulSets(ns).Create(ctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.StatefulSetSpec{Replicas: &one, ServiceName: name, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: echoTemplate(labels)}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create statefulset: %v", err)
	}
	var pod *corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name+"-0", metav1.GetOptions{})
		if err != nil || p.Status.Phase != corev1.PodRunning || !podReady(p) {
			return false, nil
		}
		pod = p
		return true, nil
	})
	if err != nil {
		t.Fatalf("statefulset pod %s-0 not Running and Ready: %v\n%s", name, err, describePods(ctx, cs, ns))
	}
	return pod
}

// waitHostDNS asks the kube-dns Service from the host until name answers ip:
// CoreDNS then has the test's objects from its watch, and the pods' lookups
// need no retries.
func waitHostDNS(ctx context.Context, t *testing.T, name, ip string) {
	t.Helper()
	start := time.Now()
	server := net.JoinHostPort(cluster.ClusterDNS, "53")
	var last string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		r, err := dnsquery.Query(c, "udp", server, name, dnsmessage.TypeA)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		last = r.RCodeName() + " " + strings.Join(r.Answers, ",")
		return r.Authoritative && slices.Equal(r.Answers, []string{ip}), nil
	})
	if err != nil {
		t.Fatalf("%s at %s from the host: last answer %q, want %s: %v", name, server, last, ip, err)
	}
	t.Logf("host: %s -> %s after %s", name, ip, time.Since(start).Round(time.Millisecond))
}
