package docsync

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDur(t *testing.T) {
	for d, want := range map[time.Duration]string{
		10 * time.Second: "10 s", 500 * time.Millisecond: "500 ms", 5 * time.Minute: "5 min",
		12 * time.Hour: "12 h", 90 * time.Second: "90 s", 1500 * time.Microsecond: "1.5ms",
	} {
		if got := Dur(d); got != want {
			t.Errorf("Dur(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestSize(t *testing.T) {
	for n, want := range map[int]string{4 << 20: "4 MiB", 256 << 10: "256 KiB", 1024: "1 KiB", 1000: "1000 bytes"} {
		if got := Size(n); got != want {
			t.Errorf("Size(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestEveryPackageIsInTheTable: docs/architecture.md's package table names
// every package of the product (not the tests'), so a new package cannot
// go undescribed.
func TestEveryPackageIsInTheTable(t *testing.T) {
	root := Root(t)
	text := Text(t, "docs/architecture.md")
	for _, top := range []string{"agent", "client", "cmd", "deploy", "internal", "tunnel", "webhook"} {
		err := filepath.WalkDir(filepath.Join(root, top), func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return err
			}
			if d.Name() == "testdata" {
				return filepath.SkipDir
			}
			if !hasProductGo(t, p) {
				return nil
			}
			rel, _ := filepath.Rel(root, p)
			if !strings.Contains(text, "`"+filepath.ToSlash(rel)+"`") {
				t.Errorf("docs/architecture.md does not describe package %s (the Packages table)", rel)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func hasProductGo(t *testing.T, dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if n := e.Name(); !e.IsDir() && strings.HasSuffix(n, ".go") && !strings.HasSuffix(n, "_test.go") {
			return true
		}
	}
	return false
}
