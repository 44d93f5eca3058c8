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

	"github.com/detour-dev/detour/tunnel"
)

// Config is ~/.config/detour/config.yml.
type Config struct {
	Images struct {
		AgentImage string `yaml:"agentImage"`
	} `yaml:"images"`
	Intercept struct {
		DefaultMechanism string `yaml:"defaultMechanism"`
		// PreviewURL makes --preview-url the default for http intercepts.
		PreviewURL bool `yaml:"previewURL"`
	} `yaml:"intercept"`
	Agent struct {
		// AppProtocolStrategy says how the agent finds the app's HTTP
		// version when the Service port has no appProtocol.
		AppProtocolStrategy string `yaml:"appProtocolStrategy"`
	} `yaml:"agent"`
	Timeouts struct {
		Rollout      time.Duration `yaml:"rollout"`
		AgentArrival time.Duration `yaml:"agentArrival"`
	} `yaml:"timeouts"`
}

func defaultConfig() Config {
	var c Config
	c.Intercept.DefaultMechanism = "tcp"
	c.Agent.AppProtocolStrategy = tunnel.StrategyHTTP2Probe
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
	if !identifier.MatchString(c.Intercept.DefaultMechanism) {
		return c, fmt.Errorf("config %s: intercept.defaultMechanism %q: give a mechanism such as tcp or http", path, c.Intercept.DefaultMechanism)
	}
	switch c.Agent.AppProtocolStrategy {
	case tunnel.StrategyHTTP2Probe, tunnel.StrategyHTTP, tunnel.StrategyHTTP2:
	default:
		return c, fmt.Errorf("config %s: agent.appProtocolStrategy %q: want %s, %s or %s", path, c.Agent.AppProtocolStrategy, tunnel.StrategyHTTP2Probe, tunnel.StrategyHTTP, tunnel.StrategyHTTP2)
	}
	if c.Timeouts.Rollout <= 0 || c.Timeouts.AgentArrival <= 0 {
		return c, fmt.Errorf("config %s: timeouts must be positive durations such as 3m", path)
	}
	return c, nil
}
