package tunnel

import (
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/zap"
)

// Config tunes a tunnel session.
type Config struct {
	// KeepAliveInterval is how often each side pings the other. A peer that
	// stops answering (a laptop gone to sleep, a dropped port-forward) is
	// declared dead after about KeepAliveInterval + WriteTimeout, and the
	// agent then gives its intercepts back to the app.
	KeepAliveInterval time.Duration
	// WriteTimeout bounds one write to the underlying connection.
	WriteTimeout time.Duration
	// StreamWindow is the largest receive window of one stream. yamux's
	// 256 KiB default caps a stream at 256 KiB per round trip; a
	// port-forward's round trip is milliseconds, so that default would cap
	// a transfer far below the port-forward's own ceiling
	// (docs/benchmarks.md has the measurement behind the default).
	StreamWindow uint32
	// AcceptBacklog is how many opened streams may wait for Accept.
	AcceptBacklog int
}

// DefaultConfig returns the settings used unless a caller overrides them.
func DefaultConfig() Config {
	return Config{
		KeepAliveInterval: DefaultKeepAliveInterval,
		WriteTimeout:      DefaultWriteTimeout,
		StreamWindow:      DefaultStreamWindow,
		AcceptBacklog:     1024,
	}
}

// Verify reports a setting that yamux would reject or that makes no sense.
func (c Config) Verify() error {
	if c.KeepAliveInterval <= 0 {
		return fmt.Errorf("tunnel config: keep-alive interval must be positive, got %s", c.KeepAliveInterval)
	}
	if c.WriteTimeout <= 0 {
		return fmt.Errorf("tunnel config: write timeout must be positive, got %s", c.WriteTimeout)
	}
	if c.StreamWindow < 256<<10 {
		return fmt.Errorf("tunnel config: stream window must be at least 256 KiB, got %d", c.StreamWindow)
	}
	if c.AcceptBacklog <= 0 {
		return fmt.Errorf("tunnel config: accept backlog must be positive, got %d", c.AcceptBacklog)
	}
	return nil
}

func (c Config) yamux(log *zap.Logger) (*yamux.Config, error) {
	if err := c.Verify(); err != nil {
		return nil, err
	}
	yc := yamux.DefaultConfig()
	yc.AcceptBacklog = c.AcceptBacklog
	yc.EnableKeepAlive = true
	yc.KeepAliveInterval = c.KeepAliveInterval
	yc.ConnectionWriteTimeout = c.WriteTimeout
	yc.MaxStreamWindowSize = c.StreamWindow
	// yamux refuses a config with both set.
	yc.LogOutput = nil
	yc.Logger = zap.NewStdLog(log.Named("yamux"))
	if err := yamux.VerifyConfig(yc); err != nil {
		return nil, fmt.Errorf("tunnel config: %w", err)
	}
	return yc, nil
}

// Server starts the agent's side of a session over conn.
func Server(conn io.ReadWriteCloser, cfg Config, log *zap.Logger) (*yamux.Session, error) {
	yc, err := cfg.yamux(log)
	if err != nil {
		return nil, err
	}
	s, err := yamux.Server(newCoalescingConn(conn), yc)
	if err != nil {
		return nil, fmt.Errorf("start tunnel server session: %w", err)
	}
	return s, nil
}

// Client starts the workstation's side of a session over conn.
func Client(conn io.ReadWriteCloser, cfg Config, log *zap.Logger) (*yamux.Session, error) {
	yc, err := cfg.yamux(log)
	if err != nil {
		return nil, err
	}
	s, err := yamux.Client(newCoalescingConn(conn), yc)
	if err != nil {
		return nil, fmt.Errorf("start tunnel client session: %w", err)
	}
	return s, nil
}
