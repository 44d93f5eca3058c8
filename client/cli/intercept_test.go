package cli

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteEnvFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "app.env")
	env := map[string]string{"DB_URL": "postgres://u:p@db:5432/x?sslmode=disable", "EMPTY": "", "A": "1 2"}
	var notes bytes.Buffer
	if err := writeEnvFile(p, envDocker, env, &notes); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(notes.String(), "(A, DB_URL)") || !strings.Contains(notes.String(), "--env-syntax sh") {
		t.Fatalf("values a shell would misread: note %q, want A, DB_URL and the way out", notes.String())
	}
	b, _ := os.ReadFile(p)
	want := "A=1 2\nDB_URL=postgres://u:p@db:5432/x?sslmode=disable\nEMPTY=\n"
	if string(b) != want {
		t.Fatalf("env file:\n%s\nwant:\n%s", b, want)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("env file mode %v, want 0600: values may be secrets", fi.Mode().Perm())
	}
	if err := writeEnvFile(p, envDocker, map[string]string{"CERT": "a\nb"}, io.Discard); err == nil || !strings.Contains(err.Error(), "--env-json") {
		t.Fatalf("multi-line value: %v", err)
	}
}

func TestCommandLineErrors(t *testing.T) {
	cases := map[string][]string{
		"needs exactly one NAME":                {"intercept", "--port", "8080"},
		`required flag(s) "port"`:               {"intercept", "hello"},
		"LOCAL must be a port":                  {"intercept", "hello", "--port", "http"},
		"both send to local port 8080":          {"intercept", "hello", "--port", "8080:http", "--port", "8080:grpc"},
		"each names its Service port":           {"intercept", "hello", "--port", "8080:http", "--port", "9090"},
		"not supported by any known agent":      {"intercept", "hello", "--port", "8080", "--mechanism", "udp"},
		"needs the intercept's":                 {"leave"},
		`--http-match "x-dev": want NAME=VALUE`: {"intercept", "hello", "--port", "8080", "--http-match", "x-dev"},
		"need --mechanism http":                 {"intercept", "hello", "--port", "8080", "--preview-url"},
		"--ingress-port missing":                {"intercept", "hello", "--port", "8080", "--http-match", "auto", "--preview-url", "--ingress-host", "10.0.0.1"},
		"run in a terminal to be asked":         {"intercept", "hello", "--port", "8080", "--mechanism", "http", "--preview-url"},
		"cannot be combined":                    {"intercept", "hello", "--port", "8080", "--mechanism", "http", "--http-match", "auto", "--http-match", "a=b"},
		"takes no arguments":                    {"status", "extra"},
		"use json or yaml":                      {"status", "-o", "xml"},
		"--agent WORKLOAD, or --all":            {"uninstall"},
		"not both":                              {"uninstall", "--all", "--agent", "web"},
	}
	for want, args := range cases {
		var out, errOut bytes.Buffer
		t.Setenv("DETOUR_HOME", t.TempDir())
		t.Setenv("XDG_CONFIG_HOME", t.TempDir())
		root := NewRootCommand(strings.NewReader(""), &out, &errOut)
		root.SetArgs(args)
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("detour %s: err = %v, want it to contain %q", strings.Join(args, " "), err, want)
		}
	}
}
