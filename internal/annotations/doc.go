// Package annotations holds the names that the webhook and the client share:
// the pod annotations that opt a workload in and configure its agent, the
// status annotation the webhook leaves on an injected pod, the names of the
// containers it adds, and the agent's fixed ports.
//
// Both sides import these constants instead of spelling the strings, so a
// rename is one change and a typo is a compile error.
package annotations
