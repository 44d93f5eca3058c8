// Package addrset is a bounded set of IP addresses that expire: the
// addresses the cluster DNS returned, which the agent (egress rules) and
// the client (routing) both treat as cluster destinations for a while —
// and the address rules both sides share: which DNS records may teach an
// address (Answers, InDomain, Teaches: label by label, never a pod record
// that spells its address), and which IPv4 address an IPv6 address
// carries for a translator or tunnel (EmbeddedIPv4: NAT64, 6to4, Teredo).
package addrset
