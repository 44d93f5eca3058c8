package images

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestDetourSpecRefusesDynamicBinaries(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	os.WriteFile(src, []byte("package main\nimport \"net\"\nfunc main() { net.Dial(\"tcp\", \"x\") }\n"), 0o644)
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "bin", "detour-agent"), src)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("cannot build a cgo binary here: %v %s", err, out)
	}
	if _, err := DetourSpec(filepath.Join(dir, "bin")); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Fatalf("err = %v, want a refusal of the dynamic binary", err)
	}
}
