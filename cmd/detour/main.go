// Command detour is the detour CLI. Installed as kubectl-detour it also
// works as a kubectl plugin: kubectl detour intercept ...
package main

import (
	"context"
	"errors"
	"fmt"
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
	defer stop()
	err := cli.NewRootCommand(os.Stdin, os.Stdout, os.Stderr).ExecuteContext(ctx)
	var code cli.ExitCode
	switch {
	case err == nil:
	case errors.As(err, &code):
		os.Exit(int(code))
	default:
		fmt.Fprintln(os.Stderr, "detour:", err)
		os.Exit(1)
	}
}
