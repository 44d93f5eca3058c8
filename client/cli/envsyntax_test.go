package cli

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// envSamples are the environments the golden files render: "plain" holds
// every character a syntax could misread, on one line; "multiline" adds
// newlines, for the syntaxes that can hold them.
var envSamples = map[string]map[string]string{
	"plain": {
		"PLAIN":       "postgres://u:p@db:5432/x?sslmode=disable",
		"EMPTY":       "",
		"SPACES":      "  two  spaces  ",
		"SINGLE":      "it's",
		"DOUBLE":      `say "hi"`,
		"DOLLAR":      "$HOME ${HOME} $(id) $$",
		"BACKTICK":    "`id`",
		"BACKSLASH":   `C:\path\ end\`,
		"BANG":        "hi!1 !! !$",
		"PERCENT":     "100% %PATH% %%",
		"CMD_SPECIAL": `a&b|c<d>e^f(g)h "x&y" z&w`,
		"GLOB":        "*.go ~user ?#x",
		"TAB":         "a\tb",
		"CURLY":       "l‘r’ lo‚w‛",
		"EQUALS":      "a=b=c",
		"UNICODE":     "héllo wörld ✓",
		"my.dotted":   "names only some syntaxes take",
	},
	"multiline": {
		"CERT":      "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
		"CRLF":      "line1\r\nline2",
		"MIXED":     "it's \"$x\"\n`y` \\ !z\n",
		"TRAILING":  "ends with a backslash\\",
		"NEWLINEBS": "a\\\nb",
	},
}

// canHoldNewlines is the syntaxes with a way to write a newline in a value.
func canHoldNewlines(syntax string) bool { return syntax != envDocker && syntax != envCmd }

// TestEnvSyntaxGolden renders each sample in each syntax and compares it to
// testdata/envsyntax/SAMPLE.SYNTAX; -update rewrites them. A golden file
// that no case produces fails the test.
func TestEnvSyntaxGolden(t *testing.T) {
	dir := filepath.Join("testdata", "envsyntax")
	produced := map[string]bool{}
	for sample, env := range envSamples {
		for _, syntax := range envSyntaxes {
			if sample == "multiline" && !canHoldNewlines(syntax) {
				continue
			}
			name := sample + "." + syntax
			produced[name] = true
			t.Run(name, func(t *testing.T) {
				r, err := renderEnv(syntax, env)
				if err != nil {
					t.Fatal(err)
				}
				path := filepath.Join(dir, name)
				if *updateGolden {
					if err := os.MkdirAll(dir, 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(path, r.content, 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("read the golden file (create it with -update): %v", err)
				}
				if !bytes.Equal(r.content, want) {
					t.Errorf("--env-syntax %s differs from %s (rerun with -update if intended):\n--- got\n%s\n--- want\n%s", syntax, path, r.content, want)
				}
			})
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !produced[e.Name()] {
			t.Errorf("stale golden file %s: no case renders it (remove it)", filepath.Join(dir, e.Name()))
		}
	}
}

func TestEnvSyntaxLimits(t *testing.T) {
	for _, syntax := range []string{envDocker, envCmd} {
		_, err := renderEnv(syntax, map[string]string{"CERT": "a\nb"})
		if err == nil || !strings.Contains(err.Error(), "CERT has a multi-line value") || !strings.Contains(err.Error(), "--env-") {
			t.Errorf("--env-syntax %s, a multi-line value: err = %v, want it to name CERT and a syntax that can", syntax, err)
		}
	}
	r, err := renderEnv(envSh, map[string]string{"my.dotted": "x", "OK": "y"})
	if err != nil || len(r.skipped) != 1 || r.skipped[0] != "my.dotted" {
		t.Errorf("sh with a name it cannot assign: skipped %v, err %v; want [my.dotted]", r.skipped, err)
	}
	if _, err := renderEnv("bash", nil); !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "docker, compose, sh, csh, cmd, ps, json") {
		t.Errorf("unknown syntax: err = %v, want a usage error listing the syntaxes", err)
	}
}

// TestEnvSyntaxRoundTrip has the real shells found on this machine read
// what detour writes for them, and checks each value comes back unchanged.
// (compose has no reader here; cmd and PowerShell only on their systems:
// the golden files pin them.)
func TestEnvSyntaxRoundTrip(t *testing.T) {
	readers := []struct {
		syntax, shell string
		args          func(file string) []string
	}{
		{envSh, "sh", func(f string) []string { return []string{"-c", `. "$0" && env -0`, f} }},
		{envSh, "dash", func(f string) []string { return []string{"-c", `. "$0" && env -0`, f} }},
		{envSh, "bash", func(f string) []string { return []string{"-c", `. "$0" && env -0`, f} }},
		{envSh, "zsh", func(f string) []string { return []string{"-c", `. "$0" && env -0`, f} }},
		{envCsh, "tcsh", func(f string) []string { return []string{"-f", "-c", `source "$argv[1]" && env -0`, f} }},
		{envCsh, "csh", func(f string) []string { return []string{"-f", "-c", `source "$argv[1]" && env -0`, f} }},
		{envPS, "pwsh", func(f string) []string {
			return []string{"-NoProfile", "-NonInteractive", "-Command", ". '" + strings.ReplaceAll(f, "'", "''") + "'; & env -0"}
		}},
	}
	for _, rd := range readers {
		t.Run(rd.syntax+"/"+rd.shell, func(t *testing.T) {
			path, err := exec.LookPath(rd.shell)
			if err != nil {
				t.Skipf("%s is not installed", rd.shell)
			}
			env := map[string]string{}
			for _, sample := range []string{"plain", "multiline"} {
				for k, v := range envSamples[sample] {
					env[k] = v
				}
			}
			r, err := renderEnv(rd.syntax, env)
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(t.TempDir(), "detour env") // a space in the path, too
			if err := os.WriteFile(file, r.content, 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(path, rd.args(file)...)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent", "x=EXPANDED"}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%s reading the file: %v\n%s\nfile:\n%s", rd.shell, err, stderr.String(), r.content)
			}
			got := map[string]string{}
			for _, kv := range strings.Split(string(out), "\x00") {
				if k, v, ok := strings.Cut(kv, "="); ok {
					got[k] = v
				}
			}
			skipped := map[string]bool{}
			for _, k := range r.skipped {
				skipped[k] = true
			}
			keys := make([]string, 0, len(env))
			for k := range env {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if skipped[k] {
					continue
				}
				if got[k] != env[k] {
					t.Errorf("%s read %s = %q, want %q", rd.shell, k, got[k], env[k])
				}
			}
		})
	}
}
