package docsync

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Root is the module's root directory: the nearest parent of the working
// directory (a package's directory, under go test) holding go.mod.
func Root(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("docsync: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Text is doc (a path from the module root) with every run of white space
// made one space, so a phrase matches across the document's line breaks.
func Text(t testing.TB, doc string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(Root(t), doc))
	if err != nil {
		t.Fatal(err)
	}
	return normalize(string(b))
}

func normalize(s string) string { return strings.Join(strings.Fields(s), " ") }

// Check fails t for each phrase doc does not contain (white space
// normalized).
func Check(t testing.TB, doc string, phrases ...string) {
	t.Helper()
	text := Text(t, doc)
	for _, p := range phrases {
		if !strings.Contains(text, normalize(p)) {
			t.Errorf("%s no longer says %q: the code's value and the document disagree (fix the one that is wrong)", doc, p)
		}
	}
}

// Dur writes d as the documents do: "10 s", "500 ms", "5 min", "12 h".
func Dur(d time.Duration) string {
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return fmt.Sprintf("%d h", d/time.Hour)
	case d >= time.Minute && d%time.Minute == 0:
		return fmt.Sprintf("%d min", d/time.Minute)
	case d >= time.Second && d%time.Second == 0:
		return fmt.Sprintf("%d s", d/time.Second)
	case d%time.Millisecond == 0:
		return fmt.Sprintf("%d ms", d/time.Millisecond)
	}
	return d.String()
}

// Size writes n bytes as the documents do: "4 MiB", "256 KiB", "100 bytes".
func Size(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
