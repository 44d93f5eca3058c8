// Package agent is the traffic agent that runs as a sidecar in an
// intercepted pod.
//
// It accepts the pod's application traffic (redirected to it by nftables, or
// addressed to it because the webhook renamed the Service's target port),
// and for each connection decides: pass it to the app on 127.0.0.1, or send
// it through a tunnel session to the client that holds an intercept on that
// port. With no intercept, a dead client or any failure to reach the client,
// traffic goes to the app (fail open). Mirrors (tcp-mirror, http-mirror)
// get copies of the traffic on the way, queued without ever making the
// answer wait, and dropped whole when the client falls behind. On a port
// with http intercepts each request is routed by its headers
// (httproute.go): HTTP/1.1 between HTTP/1.1 peers on a connection loop of
// the agent's own (httpconn.go), h2c between h2c peers on a frame relay of
// its own (h2relay.go), everything else through net/http's server and
// ReverseProxy.
//
// Clients reach the agent's tunnel listener, bound to 127.0.0.1 only, through
// a Kubernetes port-forward: only someone allowed to port-forward to the pod
// can intercept its traffic.
//
// With --max-idle, the health port's /idle says whether the agent has had
// no session for that long and asks to be removed (idle.go); the webhook's
// idle reaper acts on it.
package agent
