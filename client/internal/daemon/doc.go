// Package daemon is detour's per-user background process. It holds the
// port-forwards and tunnel sessions of every active intercept, so that
// `detour intercept` can return once traffic flows and `status`/`leave`
// work from any shell. It serves a small JSON API on a unix socket that
// only its user can open.
//
// For each intercept a runner keeps one session per pod of the workload
// with a ready agent: it notices new pods (scale-up, a replaced pod) and
// gone ones, reconnects dropped port-forwards with backoff, and on leave
// removes the intercept from every pod before closing.
package daemon
