package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c, err := loadConfig(filepath.Join(dir, "missing.yml"))
	if err != nil || c.Timeouts.Rollout != 3*time.Minute || c.Intercept.DefaultMechanism != "tcp" {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	c, err = loadConfig(write("images:\n  agentImage: reg/detour:1\ntimeouts:\n  rollout: 90s\n"))
	if err != nil || c.Images.AgentImage != "reg/detour:1" || c.Timeouts.Rollout != 90*time.Second || c.Timeouts.AgentArrival != time.Minute {
		t.Fatalf("parsed: %+v %v", c, err)
	}
	c, err = loadConfig(write("intercept:\n  defaultMechanism: http\n  previewURL: true\nagent:\n  appProtocolStrategy: http2\n"))
	if err != nil || c.Intercept.DefaultMechanism != "http" || !c.Intercept.PreviewURL || c.Agent.AppProtocolStrategy != "http2" {
		t.Fatalf("http + preview as the default: %+v %v", c, err)
	}
	if _, err := loadConfig(write("")); err != nil {
		t.Fatalf("empty file: %v", err)
	}
	for body, want := range map[string]string{
		"images:\n  agentImge: x\n":                "line 2",
		"timeouts:\n  rollout: soon\n":             "line 2",
		"intercept:\n  defaultMechanism: Magic!\n": "defaultMechanism",
		"agent:\n  appProtocolStrategy: guess\n":   "appProtocolStrategy",
		"images: [\n":                              "config.yml",
	} {
		_, err := loadConfig(write(body))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "config.yml") {
			t.Errorf("%q: err = %v, want it to name the file and %q", body, err, want)
		}
	}
}
