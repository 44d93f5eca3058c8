// Package client is the workstation side of detour.
//
// Session speaks the tunnel protocol to one agent over any net.Conn (in
// practice a Kubernetes port-forward to the agent's tunnel port): it says
// hello, creates and removes intercepts, and for every intercepted
// connection the agent sends, dials the intercept's local target and relays
// bytes both ways. The detour CLI and its daemon are built on it.
package client
