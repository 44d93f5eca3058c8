// Package tunnel is the wire contract between the detour agent (in the pod)
// and the detour client (on the workstation).
//
// One yamux session runs over each client's connection to the agent's tunnel
// port (a Kubernetes port-forward in practice). The client opens the first
// stream, the control stream, and exchanges length-prefixed control frames
// on it; every other stream starts with a stream header and then carries raw
// bytes. spec.md beside this file documents every frame; const.go holds every
// constant and sentinel error, and const_test.go pins their values so a change
// to the wire format cannot slip in unnoticed.
package tunnel
