package cluster

import (
	"os"
	"path/filepath"

	"github.com/detour-dev/detour/tests/internal/images"
)

// Versions of the components built from source.
const (
	KubernetesVersion = "v1.37.2"
	// StagingVersion is the version of the k8s.io/* staging modules that
	// match KubernetesVersion.
	StagingVersion = "v0.37.2"
	EtcdVersion    = "v3.6.16"
	// CoreDNSVersion is the github.com/coredns/coredns release built for the
	// cluster DNS (its go.mod needs Go 1.26.0).
	CoreDNSVersion = "v1.15.0"
	// ArgoRolloutsVersion is the github.com/argoproj/argo-rollouts release
	// whose controller the cluster runs, for detour's Rollout kind. v1.10.1
	// is the newest that builds on Go 1.26.8 (v1.10.2 and v1.9.3 need
	// 1.26.10); a cold build takes about 23 min on 2 shared cores.
	ArgoRolloutsVersion = "v1.10.1"
)

// Address plan. All ranges live only inside the detour-k8s network namespace
// and on the veth pair that joins it to the host; docs/cluster.md explains it.
const (
	NetnsName = "detour-k8s"
	NetnsPath = "/run/netns/" + NetnsName
	VethHost  = "dk8s-host"
	VethNS    = "dk8s-ns"
	SinkLink  = "dk8s-sink" // port-less bridge inside the netns for the service range
	CNIBridge = "dk8s-cni0"

	NodeIP    = "10.213.0.1" // /32 on the netns' lo; apiserver, kubelet, kube-proxy bind here
	NodeRange = "10.213.0.0/24"
	// NodeNet covers the node IP and the veth; pods route it so that they
	// can answer connections the host opens to pod IPs.
	NodeNet        = "10.213.0.0/16"
	VethHostIP     = "10.213.255.1"
	VethNSIP       = "10.213.255.2"
	VethPrefix     = 30
	VethNet        = "10.213.255.0/30"
	PodCIDR        = "10.214.0.0/16"
	NodePodCIDR    = "10.214.0.0/24"
	PodGateway     = "10.214.0.1"
	ServiceCIDR    = "10.215.0.0/16"
	APIServerSvcIP = "10.215.0.1"
	ClusterDNS     = "10.215.0.10"

	NodeName      = "detour-node"
	APIServerPort = 6443
	// ExternalProbe is an address the precheck asks the netns route table
	// about; the lookup must fail. Nothing is ever sent to it.
	ExternalProbe = "192.0.2.1"
)

// GuardedRanges are the ranges the host guard keeps on the veth.
var GuardedRanges = []string{NodeNet, PodCIDR, ServiceCIDR}

// HostRoutes are the ranges the host routes via the veth into the netns.
var HostRoutes = []string{NodeRange, PodCIDR, ServiceCIDR}

// Config says where the cluster keeps its state and its build cache.
type Config struct {
	// StateDir holds PKI, configs, data, pid files and logs
	// ($DETOUR_CLUSTER_DIR, default /var/lib/detour-cluster).
	StateDir string
	// RunDir holds runtime state that belongs on tmpfs (containerd state).
	RunDir string
	// CacheDir holds built binaries keyed by version
	// ($DETOUR_CACHE, default /var/cache/detour).
	CacheDir string
	// RepoDir is the detour repository (for the images built from bin/).
	RepoDir string
}

// DefaultConfig reads the environment.
func DefaultConfig() Config {
	c := Config{
		StateDir: envOr("DETOUR_CLUSTER_DIR", "/var/lib/detour-cluster"),
		RunDir:   "/run/detour-cluster",
		CacheDir: envOr("DETOUR_CACHE", "/var/cache/detour"),
	}
	if wd, err := os.Getwd(); err == nil {
		c.RepoDir = wd
	}
	return c
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// Paths derived from the Config.
func (c Config) pki(name string) string { return filepath.Join(c.StateDir, "pki", name) }
func (c Config) kubeconfig(name string) string {
	return filepath.Join(c.StateDir, "kubeconfig", name+".conf")
}
func (c Config) logFile(name string) string  { return filepath.Join(c.StateDir, "logs", name+".log") }
func (c Config) pidFile(name string) string  { return filepath.Join(c.StateDir, "pids", name+".pid") }
func (c Config) confFile(name string) string { return filepath.Join(c.StateDir, "etc", name) }

// AdminKubeconfig is the path of the admin kubeconfig for tests and users.
func (c Config) AdminKubeconfig() string { return c.kubeconfig("admin") }

// ContainerdSocket is the cluster containerd's own socket.
func (c Config) ContainerdSocket() string {
	return filepath.Join(c.RunDir, "containerd", "containerd.sock")
}

// K8sBinDir is where the Kubernetes binaries are cached.
func (c Config) K8sBinDir() string { return filepath.Join(c.CacheDir, "k8s-"+KubernetesVersion) }

// EtcdBinDir is where etcd is cached.
func (c Config) EtcdBinDir() string { return filepath.Join(c.CacheDir, "etcd-"+EtcdVersion) }

// CoreDNSBinary is the cached CoreDNS executable.
func (c Config) CoreDNSBinary() string {
	return filepath.Join(c.CacheDir, "coredns-"+CoreDNSVersion, "coredns")
}

// ArgoRolloutsDir is where the Argo Rollouts controller and its
// CustomResourceDefinitions (crds/, from the module's manifests/crds) are
// cached.
func (c Config) ArgoRolloutsDir() string {
	return filepath.Join(c.CacheDir, "argo-rollouts-"+ArgoRolloutsVersion)
}

// EtcdBinary is the cached etcd executable.
func (c Config) EtcdBinary() string { return filepath.Join(c.EtcdBinDir(), "etcd") }

// BinaryImages are the images of binaries the cluster builds from source:
// CoreDNS (the cluster DNS), etcd (the demo's data store) and the Argo
// Rollouts controller.
func (c Config) BinaryImages() ([]images.Spec, error) {
	coredns, err := images.CoreDNSSpec(c.CoreDNSBinary())
	if err != nil {
		return nil, err
	}
	etcd, err := images.EtcdSpec(c.EtcdBinary())
	if err != nil {
		return nil, err
	}
	argo, err := images.ArgoRolloutsSpec(filepath.Join(c.ArgoRolloutsDir(), "rollouts-controller"))
	if err != nil {
		return nil, err
	}
	return []images.Spec{coredns, etcd, argo}, nil
}
