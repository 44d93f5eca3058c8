// Package delayconn delays what a connection reads, for tests of a long
// link in one process (the tunnel's windows over a remote cluster's round
// trip): a pump drains the connection at once, so the writer is never held
// back by it, and Read hands each chunk over when it is due. Pair gives
// both ends of a delayed loopback TCP connection.
package delayconn
