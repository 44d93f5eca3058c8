// Package cluster runs a real single-node Kubernetes on this machine for
// detour's end-to-end tests: binaries built from source (k8s.io/kubernetes,
// etcd and CoreDNS through the Go module proxy, cached by version; CoreDNS
// runs as the cluster DNS in kube-system), every component inside
// a dedicated network namespace that has no default route and no link to the
// external interface, and a host nftables guard installed and verified before
// anything starts. See docs/cluster.md for the address plan and the safety
// design.
package cluster
