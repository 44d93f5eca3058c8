// Package cli is the `detour` command line: cobra commands that resolve what
// the user typed against the cluster (package resolve), opt workloads in to
// the agent (package kube), and hand intercepts to the background daemon
// (package daemon). kubectl's conventions come from k8s.io/cli-runtime.
package cli
