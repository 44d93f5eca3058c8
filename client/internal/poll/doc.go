// Package poll is the client's one way to wait for the cluster or the
// daemon to reach a state: apimachinery's wait.PollUntilContextTimeout,
// with the progress lines the CLI prints while it waits (each printed once,
// when it changes) and a clear split between "the check failed" and "the
// time ran out", so that each caller words its own timeout.
package poll
