// Package nsexec runs a command in its own unprivileged user, network,
// mount and PID namespaces, with a TUN device as its only route out — no
// root, no sudo, no capabilities on the workstation.
//
// The caller (Start) re-executes its own binary as the namespace's first
// process (ChildMain, PID 1 there). Created with CLONE_NEWUSER and only the
// caller's uid and gid mapped, that process holds CAP_NET_ADMIN and
// CAP_SYS_ADMIN in the new namespaces only (as ambient capabilities): it
// brings up lo and tun0, routes everything else into tun0, hands the TUN's
// file descriptor to the caller over a unix socket (SCM_RIGHTS), bind-mounts
// the files it was given (resolv.conf) in its private mount namespace,
// drops its ambient capabilities and starts the command. The caller runs
// the userspace TCP/IP stack on the TUN; nothing on the workstation —
// routes, /etc/resolv.conf, firewall — changes.
//
// While the command runs, the first process also forwards connections
// from a unix socket in the caller's private directory to 127.0.0.1:PORT
// inside the namespace (path-based unix sockets cross network namespaces),
// which is how intercepted and --expose'd connections reach the command.
// When the command exits, the first process exits with its status and the
// kernel ends every other process of the PID namespace: nothing is left
// behind.
package nsexec
