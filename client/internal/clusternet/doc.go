// Package clusternet gives a local process the pod's view of the cluster.
// It is the netstack.Handler behind the process's TUN: each connection is
// routed (Routes, a pure decision) to the cluster — a dial stream the agent
// dials from the pod's own network namespace — or to the workstation's own
// network; and a resolver inside the namespace answers names with the
// pod's nameservers and search path, falling back to the workstation's
// resolvers for names the cluster does not own.
package clusternet
