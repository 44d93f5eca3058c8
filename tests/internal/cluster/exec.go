package cluster

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// sh runs a command and returns its trimmed stdout; the error carries stderr.
func sh(ctx context.Context, name string, args ...string) (string, error) {
	return shIn(ctx, nil, name, args...)
}

func shIn(ctx context.Context, stdin []byte, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		return strings.TrimSpace(stdout.String()), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// inNetns runs a command inside the cluster's network namespace.
func inNetns(ctx context.Context, name string, args ...string) (string, error) {
	return sh(ctx, "nsenter", append([]string{"--net=" + NetnsPath, name}, args...)...)
}
