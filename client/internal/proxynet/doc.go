// Package proxynet is the cluster network's fallback where a process
// cannot get its own namespaces or a TUN (macOS, a container whose seccomp
// blocks unshare, user namespaces disabled, /dev/net/tun not open to the
// user): a SOCKS5 proxy and an HTTP proxy (CONNECT, and plain-HTTP
// absolute-URI forwarding) on 127.0.0.1, with the same DNS and routing as
// the namespace — names resolve through a Resolver (the pod's search path
// and ndots, the workstation's resolvers for names the cluster does not
// own), connections open through a Dialer (the cluster's destinations
// through the agent, the rest from the workstation). The command runs on
// the workstation's own network with the proxy variables (Env) set, so only
// programs that honour them see the cluster.
//
// The SOCKS5 protocol is github.com/things-go/go-socks5's, with its name
// resolution and dialling pointed at ours (socks5h: names never go to the
// workstation's own stub resolver). UDP ASSOCIATE and BIND are refused:
// UDP through a SOCKS proxy is rare and would otherwise leave from the
// workstation, past the routing.
package proxynet
