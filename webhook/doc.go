// Package webhook is detour's mutating admission webhook: it injects the
// detour-agent sidecar (and, in redirect mode, the detour-init init
// container) into pods that opt in with the detour.dev/inject annotation.
//
// The package is layered so that decisions are pure and side effects sit at
// the edge:
//
//   - shouldInject (decide.go) says whether a pod gets the agent, and why not;
//   - inject (inject.go) mutates a typed pod given the Services of its
//     namespace: it picks the container and ports, the mode (port rename when
//     every intercepted Service port uses a named targetPort, nftables
//     redirect otherwise) and builds the containers;
//   - Admitter (admission.go) turns an admission/v1 request into a response
//     whose JSON patch is the mutated pod diffed against the raw request
//     object (ManagedFields cleared); no patch when nothing changed;
//   - NewHTTPHandler (http.go) is the HTTP edge: bounded body,
//     application/json only, admission/v1 only, panic → 500;
//   - CertManager (certs.go) keeps a CA and serving certificate in a Secret,
//     patches the caBundle of the MutatingWebhookConfiguration and rotates
//     before expiry, or reads a cert-manager Secret as it is;
//   - Run (server.go) serves it all over TLS ≥ 1.2 with probes and metrics
//     and shuts down gracefully;
//   - IdleReaper (idle.go, opt-in with --agent-max-idle) asks the agents of
//     the pods injected with --max-idle whether they are idle and removes
//     the opt-in of workloads whose agents all are (idleWorkloads decides).
//
// The golden tests (testdata/<case>.yaml → <case>.yaml.injected) show what
// injection does to a pod; `go test ./webhook -update` rewrites them.
package webhook
