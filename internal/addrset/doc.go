// Package addrset is a bounded set of IP addresses that expire: the
// addresses the cluster DNS returned, which the agent (egress rules) and
// the client (routing) both treat as cluster destinations for a while.
package addrset
