package cli

import (
	"bytes"
	"strings"
	"testing"
)

// TestWarnDaemonEnv: a DETOUR_SESSION_LINGER the daemon cannot read is
// said on the command's stderr, naming the variable, the value, what it
// wants and what is used instead; a good one says nothing.
func TestWarnDaemonEnv(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  []string // "" : no warning
	}{
		{"", nil},
		{"30s", nil},
		{"0", nil},
		{"soon", []string{"DETOUR_SESSION_LINGER", `"soon"`, "2m", "0 for none", "default 2m0s"}},
		{"-1m", []string{"DETOUR_SESSION_LINGER", `"-1m"`, "negative"}},
	} {
		t.Setenv("DETOUR_SESSION_LINGER", tc.value)
		var w bytes.Buffer
		warnDaemonEnv(&w)
		if tc.want == nil {
			if w.Len() != 0 {
				t.Errorf("%q: warned %q", tc.value, w.String())
			}
			continue
		}
		for _, s := range tc.want {
			if !strings.Contains(w.String(), s) {
				t.Errorf("%q: warning %q lacks %q", tc.value, w.String(), s)
			}
		}
	}
}
