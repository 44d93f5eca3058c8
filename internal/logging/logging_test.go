package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"go.uber.org/zap/zapcore"
)

func TestNewWritesJSONAtTheLevel(t *testing.T) {
	var b bytes.Buffer
	log := New(&b, zapcore.InfoLevel)
	log.Debug("hidden")
	log.Info("shown", zapcore.Field{Key: "k", Type: zapcore.StringType, String: "v"})
	var line map[string]any
	if err := json.Unmarshal(b.Bytes(), &line); err != nil {
		t.Fatalf("not one JSON line: %q", b.String())
	}
	if line["msg"] != "shown" || line["k"] != "v" || line["level"] != "info" {
		t.Fatalf("line %v", line)
	}
	if ts, _ := line["ts"].(string); len(ts) < 20 || ts[4] != '-' || ts[10] != 'T' {
		t.Fatalf("ts %q is not ISO 8601", line["ts"])
	}
}

func TestParseLevel(t *testing.T) {
	for _, ok := range []string{"debug", "info", "warn", "error", ""} {
		if _, err := ParseLevel(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"verbose", "loud"} {
		if _, err := ParseLevel(bad); !errors.Is(err, ErrLevel) {
			t.Errorf("%q: %v, want ErrLevel", bad, err)
		}
	}
}
