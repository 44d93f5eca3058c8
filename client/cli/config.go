package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is ~/.config/detour/config.yml.
type Config struct {
	Images struct {
		AgentImage string `yaml:"agentImage"`
	} `yaml:"images"`
	Intercept struct {
		DefaultMechanism string `yaml:"defaultMechanism"`
	} `yaml:"intercept"`
	Timeouts struct {
		Rollout      time.Duration `yaml:"rollout"`
		AgentArrival time.Duration `yaml:"agentArrival"`
	} `yaml:"timeouts"`
}

func defaultConfig() Config {
	var c Config
	c.Intercept.DefaultMechanism = "tcp"
	c.Timeouts.Rollout = 3 * time.Minute
	c.Timeouts.AgentArrival = time.Minute
	return c
}

// configPath is $XDG_CONFIG_HOME/detour/config.yml (~/.config/detour/config.yml).
func configPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "detour", "config.yml"), nil
}

// loadConfig reads the config file if there is one. Unknown keys and bad
// values are errors naming the file and line.
func loadConfig(path string) (Config, error) {
	c := defaultConfig()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) { // io.EOF: an empty file
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	switch c.Intercept.DefaultMechanism {
	case "tcp":
	default:
		return c, fmt.Errorf("config %s: intercept.defaultMechanism %q: this release supports tcp", path, c.Intercept.DefaultMechanism)
	}
	if c.Timeouts.Rollout <= 0 || c.Timeouts.AgentArrival <= 0 {
		return c, fmt.Errorf("config %s: timeouts must be positive durations such as 3m", path)
	}
	return c, nil
}
