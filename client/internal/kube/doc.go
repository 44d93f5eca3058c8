// Package kube is the client's side effects on the cluster: reading
// workloads and Services, opting a workload in to the agent and waiting for
// its rollout, listing the pods that carry a ready agent, and dialing an
// agent's tunnel port through a port-forward stream.
package kube
