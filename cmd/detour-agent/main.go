// Command detour-agent is the traffic agent sidecar and its init container.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/detour-dev/detour/agent"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := agent.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, agent.ErrUsage):
		fmt.Fprintln(os.Stderr, "detour-agent:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "detour-agent:", err)
		os.Exit(1)
	}
}
