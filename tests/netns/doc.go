// Package netnstest proves detour's data path in real network namespaces:
// a pod namespace with the app, the agent and its nftables rules, a
// cluster-client namespace that talks to the pod IP, and the test process
// as the workstation, reaching the agent's loopback tunnel port from inside
// the pod namespace the way a Kubernetes port-forward does.
//
// The tests need root; without it they skip and say why. The benchmarks
// (make bench) compare each detour path with its baseline in the same run.
package netnstest
