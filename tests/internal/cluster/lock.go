package cluster

import (
	"context"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Lock serializes the commands that change the cluster (up, down): two
// developers or a test and a developer running them at once would start or
// stop each other's processes. It takes an exclusive flock on the state
// directory (which down keeps, with the logs) and waits for it.
func Lock(ctx context.Context, log *zap.Logger, cfg Config) (unlock func(), err error) {
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	f, err := os.Open(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("open state dir for locking: %w", err)
	}
	waited := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if err != unix.EWOULDBLOCK {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", cfg.StateDir, err)
		}
		if !waited {
			log.Info("another cluster command is running; waiting for it", zap.String("lock", cfg.StateDir))
			waited = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}
