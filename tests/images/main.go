// Command images builds detour's local test images (the pause sandbox image,
// the echo test server, detour's own image from bin/, and the CoreDNS and
// etcd images from the cluster's build cache) and imports them into the local cluster's
// containerd:
//
//	go run ./tests/images            # build and import (cluster must be up)
//	go run ./tests/images -o DIR     # only write the tarballs into DIR
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"go.uber.org/zap"

	"github.com/detour-dev/detour/tests/internal/cluster"
	"github.com/detour-dev/detour/tests/internal/images"
)

func main() {
	out := flag.String("o", "", "only write the image tarballs into this directory; do not import")
	flag.Parse()
	zcfg := zap.NewDevelopmentConfig()
	zcfg.DisableStacktrace = true
	zcfg.DisableCaller = true
	log, err := zcfg.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, log, cluster.DefaultConfig(), *out)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "images: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *zap.Logger, cfg cluster.Config, out string) error {
	dir := out
	if dir == "" {
		dir = filepath.Join(cfg.StateDir, "images")
	}
	extra, err := cfg.BinaryImages()
	if err != nil {
		log.Warn("skipping the coredns and etcd images (go run ./tests/cluster build makes them)", zap.Error(err))
	}
	tarballs, err := images.Build(ctx, log, cfg.RepoDir, dir, extra...)
	if err != nil {
		return err
	}
	if out != "" {
		return nil
	}
	if _, err := os.Stat(cfg.ContainerdSocket()); err != nil {
		return fmt.Errorf("cluster containerd not running (run go run ./tests/cluster up): %w", err)
	}
	return images.Import(ctx, log, cfg.ContainerdSocket(), tarballs)
}
