package images

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestImageLayoutAndConfig(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "detour-agent")
	if err := os.WriteFile(bin, []byte("#!agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("not executable"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec, err := DetourSpec(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.Files) != 1 || spec.Files["/usr/local/bin/detour-agent"] != bin {
		t.Fatalf("DetourSpec files = %v, want only the executable at /usr/local/bin", spec.Files)
	}
	img, err := Image(spec)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := cf.Config.Entrypoint; len(got) != 1 || got[0] != "/usr/local/bin/detour-agent" {
		t.Errorf("entrypoint = %v", got)
	}
	if cf.Config.User != "65532:65532" || cf.OS != "linux" || cf.Architecture == "" {
		t.Errorf("user %q os %q arch %q", cf.Config.User, cf.OS, cf.Architecture)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers = %d, %v; want exactly one", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = h
		if h.Name == "usr/local/bin/detour-agent" {
			b, _ := io.ReadAll(tr)
			if string(b) != "#!agent" {
				t.Errorf("agent content %q", b)
			}
		}
	}
	for name, mode := range map[string]int64{"usr/local/bin/detour-agent": 0o755, "tmp/": 0o1777, "etc/passwd": 0o644, "usr/": 0o755} {
		h, ok := files[name]
		if !ok {
			t.Errorf("layer lacks %s (has %v)", name, keys(files))
			continue
		}
		if h.Mode != mode {
			t.Errorf("%s mode %o, want %o", name, h.Mode, mode)
		}
	}

	// The tarball round-trips with its tag, as ctr import reads it.
	p := filepath.Join(dir, "img.tar")
	if err := Write(spec, p); err != nil {
		t.Fatal(err)
	}
	if _, err := tarball.ImageFromPath(p, nil); err != nil {
		t.Fatalf("read back %s: %v", p, err)
	}
}

func TestDetourSpecWithoutBinaries(t *testing.T) {
	if _, err := DetourSpec(t.TempDir()); !errors.Is(err, ErrNoDetourBinaries) {
		t.Fatalf("got %v, want ErrNoDetourBinaries", err)
	}
}

func TestCoreDNSSpec(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "coredns")
	if _, err := CoreDNSSpec(bin); err == nil {
		t.Fatal("CoreDNSSpec accepted a missing binary")
	}
	if err := os.WriteFile(bin, []byte("#!coredns"), 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := CoreDNSSpec(bin)
	if err != nil {
		t.Fatal(err)
	}
	if s.Ref != CoreDNS || s.Files["/coredns"] != bin || len(s.Entrypoint) != 1 || s.Entrypoint[0] != "/coredns" || s.UID != NonRoot {
		t.Fatalf("spec = %+v", s)
	}
}

func TestEtcdSpec(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "etcd")
	if _, err := EtcdSpec(bin); err == nil {
		t.Fatal("EtcdSpec accepted a missing binary")
	}
	if err := os.WriteFile(bin, []byte("#!etcd"), 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := EtcdSpec(bin)
	if err != nil {
		t.Fatal(err)
	}
	if s.Ref != Etcd || s.Files["/etcd"] != bin || len(s.Entrypoint) != 1 || s.Entrypoint[0] != "/etcd" || s.UID != NonRoot {
		t.Fatalf("spec = %+v", s)
	}
}

func keys(m map[string]*tar.Header) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
