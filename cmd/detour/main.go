// Command detour is the detour CLI. Installed as kubectl-detour it also
// works as a kubectl plugin: kubectl detour intercept ...
//
// It exits 0 when done, 1 when the cluster, the daemon, the network or a
// file refused, 2 for a wrong command line, and with -- CMD with CMD's own
// status (see cli.ExitStatus).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/detour-dev/detour/client/cli"
)

func main() {
	if cli.NamespaceChild() {
		os.Exit(cli.NamespaceChildMain())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
