package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/detour-dev/detour/tests/internal/dnsquery"
	"github.com/detour-dev/detour/tests/internal/images"
)

// Corefile is the cluster DNS's configuration. The kubernetes plugin answers
// for cluster.local and the reverse zones as on any cluster. There is no
// forward: the netns has no way out, so an upstream would only make lookups
// of outside names hang until they time out. Instead the file plugin serves
// an empty root zone (RootZone), so every name outside the cluster, and
// every PTR the kubernetes plugin passes on, gets an immediate authoritative
// NXDOMAIN. The binary has no plugin that could send a query anywhere.
const Corefile = `.:53 {
    errors
    health
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    file /etc/coredns/db.root .
    cache 30
    loadbalance
}
`

// RootZone is the empty root zone behind the kubernetes plugin: a SOA (whose
// minimum, 30 s, is how long resolvers cache the NXDOMAIN) and an NS.
const RootZone = `$ORIGIN .
$TTL 30
@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30
@ IN NS ns.dns.cluster.local.
`

// dnsProbeName is what up and status ask the cluster DNS about; it must
// answer APIServerSvcIP.
const dnsProbeName = "kubernetes.default.svc.cluster.local."

// dnsManifest is CoreDNS as a real cluster runs it: a Deployment in
// kube-system behind the kube-dns Service at the kubelet's clusterDNS, with a
// ServiceAccount allowed only to list and watch what the kubernetes plugin
// reads (with pods insecure it does not watch pods).
func dnsManifest() string {
	return fmt.Sprintf(`apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [services, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects:
- {kind: ServiceAccount, name: coredns, namespace: kube-system}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
%[1]s
  db.root: |
%[2]s
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  replicas: 1
  selector:
    matchLabels: {k8s-app: kube-dns}
  template:
    metadata:
      labels: {k8s-app: kube-dns}
      # A new Corefile, zone or version rolls the pod on the next up.
      annotations: {detour.dev/coredns-config: "%[3]s"}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      containers:
      - name: coredns
        image: %[4]s
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        resources:
          requests: {cpu: 50m, memory: 70Mi}
          limits: {memory: 170Mi}
        securityContext:
          runAsNonRoot: true
          runAsUser: %[5]d
          runAsGroup: %[5]d
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
        volumeMounts:
        - {name: config, mountPath: /etc/coredns, readOnly: true}
        readinessProbe:
          httpGet: {path: /ready, port: 8181}
          periodSeconds: 1
        livenessProbe:
          httpGet: {path: /health, port: 8080}
          initialDelaySeconds: 10
          timeoutSeconds: 5
          failureThreshold: 5
      volumes:
      - name: config
        configMap: {name: coredns}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns, kubernetes.io/name: CoreDNS}
spec:
  selector: {k8s-app: kube-dns}
  clusterIP: %[6]s
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
`, indent(Corefile, "    "), indent(RootZone, "    "), dnsFingerprint(), images.CoreDNS, images.NonRoot, ClusterDNS)
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n")
}

func dnsFingerprint() string {
	sum := sha256.Sum256([]byte(CoreDNSVersion + "\n" + strings.Join(CoreDNSPlugins, ",") + "\n" + Corefile + RootZone))
	return hex.EncodeToString(sum[:8])
}

// DeployDNS applies the CoreDNS objects and waits until the kube-dns Service
// answers from the host, over UDP and TCP.
func DeployDNS(ctx context.Context, log *zap.Logger, cfg Config) error {
	t := time.Now()
	c, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	kubectl := filepath.Join(cfg.K8sBinDir(), "kubectl")
	if _, err := shIn(c, []byte(dnsManifest()), kubectl, "--kubeconfig", cfg.AdminKubeconfig(), "apply", "-f", "-"); err != nil {
		return fmt.Errorf("apply coredns: %w", err)
	}
	if err := waitDNS(ctx, cfg, 2*time.Minute); err != nil {
		return err
	}
	log.Info("cluster DNS answers", zap.String("service", "kube-system/kube-dns"), zap.String("ip", ClusterDNS),
		zap.String("version", CoreDNSVersion), zap.Duration("took", time.Since(t).Round(time.Millisecond)))
	return nil
}

func waitDNS(ctx context.Context, cfg Config, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := DNSAnswers(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster DNS not answering after %s: %w\n%s", timeout, err, dnsDiagnosis(ctx, cfg))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// DNSAnswers asks the kube-dns Service, from the host over its route into
// the cluster, for the kubernetes Service's name over UDP and over TCP; both
// must answer APIServerSvcIP.
func DNSAnswers(ctx context.Context) error {
	var errs []error
	for _, network := range []string{"udp", "tcp"} {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		r, err := dnsquery.Query(c, network, net.JoinHostPort(ClusterDNS, "53"), dnsProbeName, dnsmessage.TypeA)
		cancel()
		switch {
		case err != nil:
			errs = append(errs, err)
		case r.RCode != dnsmessage.RCodeSuccess || !slices.Contains(r.Answers, APIServerSvcIP):
			errs = append(errs, fmt.Errorf("%s over %s: %s %v, want %s", dnsProbeName, network, r.RCodeName(), r.Answers, APIServerSvcIP))
		}
	}
	return errors.Join(errs...)
}

// dnsDiagnosis is what a failed wait shows: the CoreDNS pods and their log.
func dnsDiagnosis(ctx context.Context, cfg Config) string {
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pods, err := Kubectl(c, cfg, "-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns", "-o", "wide")
	if err != nil {
		pods = err.Error()
	}
	logs, err := Kubectl(c, cfg, "-n", "kube-system", "logs", "deployment/coredns", "--tail=20")
	if err != nil {
		logs = err.Error()
	}
	return pods + "\n" + logs
}
