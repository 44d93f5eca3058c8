// Package workload is the one table of the kinds of workload detour
// intercepts — Deployment, ReplicaSet, StatefulSet and Argo Rollouts'
// Rollout — and, for each kind, the names a user may give it, how to list
// it, read its pods' selector, pod template and replica count, patch it,
// and whether a changed pod template rolls its pods. A new kind is one entry
// in Kinds; every place that reads or changes workloads (resolve, kube,
// detour list, completion, uninstall) goes through the table.
//
// Built-in kinds go through the typed clientset; a kind served by a
// CustomResourceDefinition (Rollout) goes through the dynamic client that
// WithDynamic attaches to the clientset, and is simply absent from a
// cluster that does not serve it.
package workload
