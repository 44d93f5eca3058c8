// Command cluster runs detour's local single-node Kubernetes for e2e tests:
//
//	go run ./tests/cluster up|down|status|kubeconfig|build|check-guard
//
// See docs/cluster.md.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/detour-dev/detour/tests/internal/cluster"
)

const usage = `usage: go run ./tests/cluster COMMAND

commands:
  up           build or reuse the binaries, install the egress guard, start the cluster, wait for the node
  down         stop everything up started and restore the host
  status       report the guard, the netns and each component
  kubeconfig   print the path of the admin kubeconfig
  build        only build (or reuse) the cached binaries
  check-guard  print the guard's drop counters; fail if any is nonzero
`

func main() {
	if len(os.Args) != 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	zcfg := zap.NewDevelopmentConfig()
	zcfg.DisableStacktrace = true
	zcfg.DisableCaller = true
	zcfg.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
	if os.Getenv("DETOUR_CLUSTER_DEBUG") == "" {
		zcfg.Level = zap.NewAtomicLevelAt(zap.InfoLevel)
	}
	log, err := zcfg.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, log, cluster.DefaultConfig(), os.Args[1])
	stop()
	_ = log.Sync()
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *zap.Logger, cfg cluster.Config, cmd string) error {
	if cmd == "up" || cmd == "down" {
		unlock, err := cluster.Lock(ctx, log, cfg)
		if err != nil {
			return err
		}
		defer unlock()
	}
	switch cmd {
	case "up":
		return cluster.Up(ctx, log, cfg)
	case "down":
		return cluster.Down(ctx, log, cfg)
	case "status":
		ok, err := cluster.Status(ctx, os.Stdout, cfg)
		if err == nil && !ok {
			err = fmt.Errorf("cluster is not fully up")
		}
		return err
	case "kubeconfig":
		if _, err := os.Stat(cfg.AdminKubeconfig()); err != nil {
			return fmt.Errorf("no admin kubeconfig (run up first): %w", err)
		}
		fmt.Println(cfg.AdminKubeconfig())
		return nil
	case "build":
		return cluster.EnsureBinaries(ctx, log, cfg)
	case "check-guard":
		return cluster.CheckGuardCounters(ctx, os.Stdout)
	default:
		return fmt.Errorf("unknown command %q\n%s", cmd, usage)
	}
}
