// Package podport is the one rule for "which pods and which container port
// does this Service reach": Selects (the Service's selector against a pod's
// labels) and Find (a Service port against the containers' ports). The
// webhook uses it to choose the ports the agent serves, the CLI to find a
// workload's Service and resolve --port. It is pure.
package podport
