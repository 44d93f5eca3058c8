package agent

import (
	"maps"
	"testing"
)

// TestAppEnvironmentRuntimeVariables: the agent's own Go runtime settings
// are never reported as the app's; the app's env values are, from where
// the webhook kept them.
func TestAppEnvironmentRuntimeVariables(t *testing.T) {
	got := appEnvironment([]string{
		"PLAIN=1",
		"DETOUR_APP_GOGC=off", "DETOUR_APP_GODEBUG=http2client=0",
		"DETOUR_EGRESS_ALLOW=",
		"GOGC=100", "GOMEMLIMIT=134217728", "GOMAXPROCS=", "GODEBUG=",
	})
	want := map[string]string{"PLAIN": "1", "GOGC": "off", "GODEBUG": "http2client=0"}
	if !maps.Equal(got, want) {
		t.Fatalf("app environment = %v, want %v", got, want)
	}
}
