package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericclioptions"
)

const mirrorExtension = `image: reg/detour-mirror:1
mechanisms:
  mirror:
    flags:
      match: {type: stringArray, usage: "header to match"}
      plaintext: {type: bool, usage: "plaintext to the local process"}
`

func writeExt(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLoadExtensionsErrorsNameFileAndLine(t *testing.T) {
	cases := map[string]string{
		"image: x\nmechanisms:\n  mirror:\n    flgs: {}\n":                     "line 4",
		"mechanisms:\n  mirror: {}\n":                                          "no image",
		"image: x\n":                                                           "no mechanisms",
		"image: x\nmechanisms:\n  tcp: {}\n":                                   "already provided by the built-in agent",
		"image: x\nmechanisms:\n  http: {}\n":                                  "already provided by the built-in agent",
		"image: x\nmechanisms:\n  mirror:\n    flags:\n      m: {type: int}\n": "type \"int\"",
		"image: x\nmechanisms:\n  Bad_Name: {}\n":                              "lower-case",
		"image: [\n": "bad.yml",
	}
	for body, want := range cases {
		dir := t.TempDir()
		writeExt(t, dir, "bad.yml", body)
		_, err := loadExtensions(dir)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "bad.yml") {
			t.Errorf("%q: err = %v, want the file name and %q", body, err, want)
		}
	}
	if exts, err := loadExtensions(filepath.Join(t.TempDir(), "missing")); err != nil || len(exts) != 0 {
		t.Fatalf("missing dir: %v %v", exts, err)
	}
}

func TestMechanismSelection(t *testing.T) {
	dir := t.TempDir()
	writeExt(t, dir, "mirror.yml", mirrorExtension)
	exts, err := loadExtensions(dir)
	if err != nil {
		t.Fatal(err)
	}
	parse := func(args ...string) map[string]map[string][]string {
		fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
		get, err := mechanismFlags(fs, exts)
		if err != nil {
			t.Fatal(err)
		}
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return get()
	}
	set := parse("--mirror-match", "x-user=alice", "--mirror-match", "x-env=dev")
	if got := set["mirror"]["match"]; len(got) != 2 || got[1] != "x-env=dev" {
		t.Fatalf("flag values: %v", set)
	}
	m, img, err := chooseMechanism("", "tcp", set, exts)
	if err != nil || m != "mirror" || img != "reg/detour-mirror:1" {
		t.Fatalf("--mirror-match implies mirror: %s %s %v", m, img, err)
	}
	// The built-in http mechanism works the same way, with the built-in agent.
	httpSet := parse("--http-match", "x-user=alice")
	if got := httpSet["http"]["match"]; len(got) != 1 || got[0] != "x-user=alice" {
		t.Fatalf("built-in --http-match values: %v", httpSet)
	}
	if m, img, err := chooseMechanism("", "tcp", httpSet, exts); err != nil || m != "http" || img != "" {
		t.Fatalf("--http-match implies the built-in http: %s %q %v", m, img, err)
	}
	if m, img, err := chooseMechanism("", "tcp", parse(), exts); err != nil || m != "tcp" || img != "" {
		t.Fatalf("default: %s %s %v", m, img, err)
	}
	if m, _, err := chooseMechanism("mirror", "tcp", parse(), exts); err != nil || m != "mirror" {
		t.Fatalf("explicit: %s %v", m, err)
	}
	if _, _, err := chooseMechanism("tcp", "tcp", set, exts); err == nil || !strings.Contains(err.Error(), "conflicts") {
		t.Fatalf("conflict: %v", err)
	}
	if _, _, err := chooseMechanism("grpc", "tcp", parse(), exts); err == nil || !strings.Contains(err.Error(), "known: http, mirror, tcp") {
		t.Fatalf("unknown mechanism: %v", err)
	}
}

func TestExtensionFlagClashesAreRefused(t *testing.T) {
	cases := []struct {
		files map[string]string
		want  string
	}{
		{map[string]string{"env.yml": "image: x\nmechanisms:\n  env:\n    flags:\n      file: {type: string}\n"}, "--env-file (mechanism env, flag file) is one of detour intercept's own flags"},
		{map[string]string{"as.yml": "image: x\nmechanisms:\n  as:\n    flags:\n      group: {type: string}\n"}, "--as-group"},
		{map[string]string{
			"a.yml":   "image: x\nmechanisms:\n  a:\n    flags:\n      b-c: {type: string}\n",
			"a-b.yml": "image: y\nmechanisms:\n  a-b:\n    flags:\n      c: {type: string}\n",
		}, "is also declared by"},
	}
	for _, tc := range cases {
		dir := t.TempDir()
		for name, body := range tc.files {
			writeExt(t, dir, name, body)
		}
		exts, err := loadExtensions(dir)
		if err != nil {
			t.Fatal(err)
		}
		a := &app{exts: exts, kube: genericclioptions.NewConfigFlags(true)}
		a.interceptCommand()
		if a.extsErr == nil || !strings.Contains(a.extsErr.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.files, a.extsErr, tc.want)
		}
	}
}
