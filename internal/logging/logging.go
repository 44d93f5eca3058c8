package logging

import (
	"errors"
	"fmt"
	"io"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// ErrLevel means a log level other than debug, info, warn or error.
var ErrLevel = errors.New("want debug, info, warn or error")

// ParseLevel reads a --log-level value as zap does ("" is info).
func ParseLevel(level string) (zapcore.Level, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return 0, fmt.Errorf("--log-level %q: %w", level, ErrLevel)
	}
	return lvl, nil
}

// New is a JSON logger at lvl writing to w.
func New(w io.Writer, lvl zapcore.Level) *zap.Logger {
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(w), lvl))
}
