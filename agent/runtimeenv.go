package agent

import (
	"strings"

	"github.com/detour-dev/detour/internal/annotations"
)

// appRuntimeEnvironment corrects env, the app's environment as read from
// the agent's: the Go runtime variables there are the agent's own (set by
// the webhook after the app's), so they are replaced by the app's values,
// which the webhook kept under annotations.AppRuntimeEnvPrefix. A runtime
// variable the app took from envFrom is not known and is left out.
func appRuntimeEnvironment(env map[string]string, environ []string) {
	app := map[string]string{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if name, isApp := strings.CutPrefix(k, annotations.AppRuntimeEnvPrefix); ok && isApp {
			app[name] = v
		}
	}
	for _, name := range annotations.RuntimeVariables() {
		delete(env, name)
		if v, ok := app[name]; ok {
			env[name] = v
		}
	}
}
