// Package images builds detour's test images locally — single-layer images
// holding static Go binaries on an empty base, written as docker-archive
// tarballs with github.com/google/go-containerregistry — and imports them
// into the local cluster's containerd with `ctr -n k8s.io images import`.
// There is no registry: pods use imagePullPolicy: Never.
package images

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"go.uber.org/zap"
)

// Image names. Pause is containerd's sandbox image (see the cluster's
// containerd.toml); Echo is the e2e test server; Detour holds bin/; CoreDNS
// is the cluster DNS and Etcd the demo's data store, both built from source
// by tests/internal/cluster (Etcd is the binary the cluster itself runs).
const (
	Pause   = "detour.local/pause:dev"
	Echo    = "detour.local/echo:dev"
	Detour  = "detour.local/detour:dev"
	CoreDNS = "detour.local/coredns:dev"
	Etcd    = "detour.local/etcd:dev"
	// ArgoRollouts is the Argo Rollouts controller, built from source by
	// tests/internal/cluster.
	ArgoRollouts = "detour.local/argo-rollouts:dev"
)

// NonRoot is the uid and gid the echo, detour, coredns and etcd images run as.
const NonRoot = 65532

// ErrNoDetourBinaries means bin/detour-agent is missing, so the detour image
// is skipped.
var ErrNoDetourBinaries = errors.New("no detour binaries in bin/ (run make build)")

// Spec is one image: files copied to paths in the image, and its config.
type Spec struct {
	Ref        string
	Files      map[string]string // path in image -> path on disk
	Entrypoint []string
	UID        int
}

// Build compiles the test programs and writes one tarball per image, and
// one for each of extra (images of binaries built elsewhere, such as
// CoreDNSSpec), into outDir; it returns the tarball paths. The detour image
// is skipped, with a warning, when repoDir/bin has no detour-agent.
func Build(ctx context.Context, log *zap.Logger, repoDir, outDir string, extra ...Spec) ([]string, error) {
	start := time.Now()
	binDir := filepath.Join(outDir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", binDir, err)
	}
	for _, prog := range []string{"pause", "echo"} {
		if err := goBuild(ctx, repoDir, filepath.Join(binDir, prog), "./tests/images/"+prog); err != nil {
			return nil, err
		}
	}
	specs := []Spec{
		{Ref: Pause, Files: map[string]string{"/pause": filepath.Join(binDir, "pause")}, Entrypoint: []string{"/pause"}, UID: 65535},
		{Ref: Echo, Files: map[string]string{"/echo": filepath.Join(binDir, "echo")}, Entrypoint: []string{"/echo"}, UID: NonRoot},
	}
	detour, err := DetourSpec(filepath.Join(repoDir, "bin"))
	if errors.Is(err, ErrNoDetourBinaries) {
		detour, err = buildDetour(ctx, log, repoDir, filepath.Join(outDir, "detour-bin"))
	}
	switch {
	case errors.Is(err, ErrNoDetourBinaries):
		log.Warn("skipping the detour image", zap.Error(err))
	case err != nil:
		return nil, err
	default:
		specs = append(specs, detour)
	}
	specs = append(specs, extra...)
	var out []string
	for _, s := range specs {
		p := filepath.Join(outDir, strings.NewReplacer("/", "_", ":", "_").Replace(s.Ref)+".tar")
		if err := Write(s, p); err != nil {
			return nil, err
		}
		log.Info("image built", zap.String("image", s.Ref), zap.String("tarball", p))
		out = append(out, p)
	}
	log.Info("images built", zap.Int("count", len(out)), zap.Duration("took", time.Since(start).Round(time.Millisecond)))
	return out, nil
}

// DetourSpec describes the detour image: every executable in binDir at
// /usr/local/bin, entrypoint detour-agent, uid 65532.
func DetourSpec(binDir string) (Spec, error) {
	if _, err := os.Stat(filepath.Join(binDir, "detour-agent")); err != nil {
		return Spec{}, fmt.Errorf("%w: %w", ErrNoDetourBinaries, err)
	}
	ents, err := os.ReadDir(binDir)
	if err != nil {
		return Spec{}, fmt.Errorf("read %s: %w", binDir, err)
	}
	s := Spec{Ref: Detour, Files: map[string]string{}, Entrypoint: []string{"/usr/local/bin/detour-agent"}, UID: NonRoot}
	for _, e := range ents {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() && info.Mode()&0o111 != 0 {
			path := filepath.Join(binDir, e.Name())
			if err := requireStatic(path); err != nil {
				return Spec{}, err
			}
			s.Files["/usr/local/bin/"+e.Name()] = path
		}
	}
	return s, nil
}

// CoreDNSSpec describes the CoreDNS image: the static binary at /coredns,
// entrypoint /coredns, uid 65532 (it binds port 53 unprivileged: the
// cluster's containerd sets ip_unprivileged_port_start=0 in every pod).
func CoreDNSSpec(bin string) (Spec, error) { return binarySpec(CoreDNS, "/coredns", bin) }

// EtcdSpec describes the etcd image: the static binary at /etcd,
// entrypoint /etcd, uid 65532 (its data directory is the pod's to give,
// an emptyDir in the demo).
func EtcdSpec(bin string) (Spec, error) { return binarySpec(Etcd, "/etcd", bin) }

// ArgoRolloutsSpec describes the Argo Rollouts controller image: the static
// binary at /rollouts-controller, its entrypoint, uid 65532 (as upstream's
// image runs it).
func ArgoRolloutsSpec(bin string) (Spec, error) {
	return binarySpec(ArgoRollouts, "/rollouts-controller", bin)
}

// binarySpec is an image of one static binary at path, its entrypoint.
func binarySpec(ref, path, bin string) (Spec, error) {
	if _, err := os.Stat(bin); err != nil {
		return Spec{}, fmt.Errorf("%s binary: %w", strings.TrimPrefix(path, "/"), err)
	}
	if err := requireStatic(bin); err != nil {
		return Spec{}, err
	}
	return Spec{Ref: ref, Files: map[string]string{path: bin}, Entrypoint: []string{path}, UID: NonRoot}, nil
}

// requireStatic refuses a dynamically linked ELF binary: the image has no
// libc or loader, so it would fail at start with "no such file or directory".
func requireStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return nil // not ELF (a script): nothing to check
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked, but the image has no libc: rebuild with make build (CGO_ENABLED=0)", path)
		}
	}
	return nil
}

// buildDetour builds ./cmd/... into dir when bin/ has no detour-agent (make
// build not run), so that `cluster up` alone yields the detour image.
func buildDetour(ctx context.Context, log *zap.Logger, repoDir, dir string) (Spec, error) {
	if _, err := os.Stat(filepath.Join(repoDir, "cmd", "detour-agent")); err != nil {
		return Spec{}, fmt.Errorf("%w, and no ./cmd/detour-agent to build", ErrNoDetourBinaries)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Spec{}, fmt.Errorf("create %s: %w", dir, err)
	}
	log.Info("bin/detour-agent missing; building ./cmd/... for the detour image", zap.String("out", dir))
	if err := goBuild(ctx, repoDir, dir+"/", "./cmd/..."); err != nil {
		return Spec{}, fmt.Errorf("%w: %w", ErrNoDetourBinaries, err)
	}
	return DetourSpec(dir)
}

func goBuild(ctx context.Context, dir, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w: %s", pkg, err, b)
	}
	return nil
}

// Write renders a Spec as a docker-archive tarball at path.
func Write(s Spec, path string) error {
	img, err := Image(s)
	if err != nil {
		return err
	}
	tag, err := name.NewTag(s.Ref)
	if err != nil {
		return fmt.Errorf("parse %s: %w", s.Ref, err)
	}
	if err := tarball.WriteToFile(path, tag, img); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Image builds the single-layer image of a Spec on an empty base.
func Image(s Spec) (v1.Image, error) {
	layerTar, err := layer(s)
	if err != nil {
		return nil, err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("layer for %s: %w", s.Ref, err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return nil, fmt.Errorf("append layer for %s: %w", s.Ref, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config of %s: %w", s.Ref, err)
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = runtime.GOARCH
	cf.Config.Entrypoint = s.Entrypoint
	cf.Config.User = fmt.Sprintf("%d:%d", s.UID, s.UID)
	cf.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	cf.Config.WorkingDir = "/"
	return mutate.ConfigFile(img, cf)
}

// layer writes the image's one layer: the files, their parent directories,
// /tmp, and an /etc/passwd naming the image's user.
func layer(s Spec) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	var addDir func(string) error
	addDir = func(d string) error {
		if d == "/" || d == "." || dirs[d] {
			return nil
		}
		if err := addDir(filepath.Dir(d)); err != nil {
			return err
		}
		dirs[d] = true
		mode := int64(0o755)
		if d == "/tmp" {
			mode = 0o1777
		}
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: mode})
	}
	addFile := func(p string, mode int64, body []byte) error {
		if err := addDir(filepath.Dir(p)); err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(p, "/"), Mode: mode, Size: int64(len(body))}); err != nil {
			return err
		}
		_, err := tw.Write(body)
		return err
	}
	if err := addDir("/tmp"); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/tmp:/sbin/nologin\n", s.UID, s.UID)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", s.UID)
	if err := addFile("/etc/passwd", 0o644, []byte(passwd)); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	if err := addFile("/etc/group", 0o644, []byte(group)); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	paths := make([]string, 0, len(s.Files))
	for p := range s.Files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		body, err := os.ReadFile(s.Files[p])
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", s.Files[p], err)
		}
		if err := addFile(p, 0o755, body); err != nil {
			return nil, fmt.Errorf("layer: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("close layer: %w", err)
	}
	return buf.Bytes(), nil
}

// Import loads tarballs into the containerd at socket, in the k8s.io
// namespace that the CRI uses.
func Import(ctx context.Context, log *zap.Logger, socket string, tarballs []string) error {
	start := time.Now()
	for _, t := range tarballs {
		cmd := exec.CommandContext(ctx, "ctr", "--address", socket, "-n", "k8s.io", "images", "import", t)
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("import %s: %w: %s", t, err, b)
		}
	}
	log.Info("images imported into containerd", zap.Int("count", len(tarballs)), zap.String("socket", socket),
		zap.Duration("took", time.Since(start).Round(time.Millisecond)))
	return nil
}
