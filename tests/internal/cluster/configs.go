package cluster

import (
	"fmt"
	"os"
	"path/filepath"
)

// SandboxImage is the pause image containerd uses for pod sandboxes; it is
// built locally by tests/internal/images.
const SandboxImage = "detour.local/pause:dev"

// writeConfigs renders containerd's, the CNI's, the kubelet's and
// kube-proxy's configuration files.
func writeConfigs(cfg Config) error {
	ctrd := filepath.Join(cfg.StateDir, "containerd")
	run := filepath.Join(cfg.RunDir, "containerd")
	files := map[string]string{
		"containerd.toml": fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  address = %[5]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[6]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[7]q
  enable_unprivileged_ports = true
  # root here lacks CAP_SYS_RESOURCE: a negative oom_score_adj (-998 for
  # sandboxes) fails in runc's nsexec without this.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[8]q
`, filepath.Join(ctrd, "root"), filepath.Join(run, "state"), cfg.ContainerdSocket(), cfg.ContainerdSocket()+".ttrpc",
			filepath.Join(run, "debug.sock"), filepath.Join(ctrd, "opt"), SandboxImage, cfg.confFile("cni")),

		"cni/10-detour.conflist": fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "detour",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q, "gateway": %q}]],
        "routes": [{"dst": %q}, {"dst": %q}, {"dst": %q}],
        "dataDir": %q
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, CNIBridge, NodePodCIDR, PodGateway, NodeNet, PodCIDR, ServiceCIDR, filepath.Join(cfg.StateDir, "cni", "ipam")),

		"kubelet.yaml": fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[2]s}
authorization: {mode: Webhook}
tlsCertFile: %[3]s
tlsPrivateKeyFile: %[4]s
containerRuntimeEndpoint: unix://%[5]s
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: [%[6]s]
resolvConf: ""
podLogsDir: %[7]s
volumePluginDir: %[8]s
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%"}
`, NodeIP, cfg.pki("ca.crt"), cfg.pki("kubelet-serving.crt"), cfg.pki("kubelet-serving.key"), cfg.ContainerdSocket(),
			ClusterDNS, filepath.Join(cfg.StateDir, "pod-logs"), filepath.Join(cfg.StateDir, "kubelet", "volume-plugins")),

		"kube-proxy.yaml": fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %s}
mode: iptables
hostnameOverride: %s
clusterCIDR: %s
bindAddress: %s
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["%s/32"]
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
`, cfg.kubeconfig("kube-proxy"), NodeName, PodCIDR, NodeIP, NodeIP),
	}
	for name, body := range files {
		p := cfg.confFile(name)
		if old, err := os.ReadFile(p); err == nil && string(old) == body {
			continue // kube-proxy exits when its config file is written to
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("create %s: %w", filepath.Dir(p), err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	return nil
}

// component is one daemon of the cluster.
type component struct {
	name  string
	bin   string
	args  []string
	ready func() error // nil error once the daemon serves
}

func components(cfg Config, h *health) []component {
	k := func(b string) string { return filepath.Join(cfg.K8sBinDir(), b) }
	p := cfg.pki
	kc := cfg.kubeconfig
	cidrs := []string{"--service-cluster-ip-range=" + ServiceCIDR}
	return []component{
		{name: "etcd", bin: filepath.Join(cfg.EtcdBinDir(), "etcd"), args: []string{
			"--name=" + NodeName, "--data-dir=" + filepath.Join(cfg.StateDir, "etcd"),
			"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
			"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
			"--initial-cluster=" + NodeName + "=http://127.0.0.1:2380", "--listen-metrics-urls=http://127.0.0.1:2381",
			"--log-level=warn", "--quota-backend-bytes=2147483648",
		}, ready: h.netnsGet("http://127.0.0.1:2379/health", `"health":"true"`)},
		{name: "kube-apiserver", bin: k("kube-apiserver"), args: append([]string{
			"--etcd-servers=http://127.0.0.1:2379",
			fmt.Sprintf("--bind-address=%s", NodeIP), fmt.Sprintf("--secure-port=%d", APIServerPort), "--advertise-address=" + NodeIP,
			"--client-ca-file=" + p("ca.crt"), "--tls-cert-file=" + p("apiserver.crt"), "--tls-private-key-file=" + p("apiserver.key"),
			"--kubelet-client-certificate=" + p("apiserver-kubelet-client.crt"), "--kubelet-client-key=" + p("apiserver-kubelet-client.key"),
			"--kubelet-certificate-authority=" + p("ca.crt"), "--kubelet-preferred-address-types=InternalIP",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + p("sa.pub"), "--service-account-signing-key-file=" + p("sa.key"),
			"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
			"--allow-privileged=true", "--enable-aggregator-routing=true", "--profiling=false", "--v=1",
		}, cidrs...), ready: h.apiserverReady},
		{name: "kube-controller-manager", bin: k("kube-controller-manager"), args: append([]string{
			"--kubeconfig=" + kc("controller-manager"), "--authentication-kubeconfig=" + kc("controller-manager"),
			"--authorization-kubeconfig=" + kc("controller-manager"),
			"--bind-address=127.0.0.1", "--secure-port=10257", "--leader-elect=false",
			"--allocate-node-cidrs=true", "--cluster-cidr=" + PodCIDR, "--node-cidr-mask-size=24",
			"--cluster-signing-cert-file=" + p("ca.crt"), "--cluster-signing-key-file=" + p("ca.key"),
			"--root-ca-file=" + p("ca.crt"), "--service-account-private-key-file=" + p("sa.key"),
			"--use-service-account-credentials=true", "--v=1",
		}, cidrs...), ready: h.netnsGet("https://127.0.0.1:10257/healthz", "ok")},
		{name: "kube-scheduler", bin: k("kube-scheduler"), args: []string{
			"--kubeconfig=" + kc("scheduler"), "--authentication-kubeconfig=" + kc("scheduler"),
			"--authorization-kubeconfig=" + kc("scheduler"),
			"--bind-address=127.0.0.1", "--secure-port=10259", "--leader-elect=false", "--v=1",
		}, ready: h.netnsGet("https://127.0.0.1:10259/healthz", "ok")},
		{name: "containerd", bin: "/usr/bin/containerd", args: []string{
			"--config=" + cfg.confFile("containerd.toml"), "--log-level=warn",
		}, ready: h.containerdReady},
		{name: "kubelet", bin: k("kubelet"), args: []string{
			"--config=" + cfg.confFile("kubelet.yaml"), "--kubeconfig=" + kc("kubelet"),
			"--hostname-override=" + NodeName, "--node-ip=" + NodeIP,
			"--root-dir=" + filepath.Join(cfg.StateDir, "kubelet"), "--cert-dir=" + filepath.Join(cfg.StateDir, "kubelet", "pki"),
			"--v=1",
		}, ready: h.netnsGet("http://127.0.0.1:10248/healthz", "ok")},
		{name: "kube-proxy", bin: k("kube-proxy"), args: []string{
			"--config=" + cfg.confFile("kube-proxy.yaml"), "--v=1",
		}, ready: h.netnsGet("http://127.0.0.1:10256/livez", "")},
	}
}
