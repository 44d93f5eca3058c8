// Package netstack runs gVisor's userspace TCP/IP stack on a TUN device's
// file descriptor: every TCP connection and UDP flow that a process in the
// TUN's network namespace opens, to any address, arrives here as a
// net.Conn and a destination, and a Handler decides where it goes (the
// cluster, through the agent; or the workstation's own network). No TCP is
// written by hand: the handshake, windows, retransmissions and checksums
// are gVisor's.
package netstack
