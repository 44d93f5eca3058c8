//go:build linux

package nsexec

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Tree is a read-only directory of files (or one file) shown at Target
// inside the namespace — the pod's ConfigMap, Secret and projected
// volumes at their real mount paths. Nothing changes outside the
// namespace's private mount table.
type Tree struct {
	Target string
	// Files by slash-separated path relative to Target (a SingleFile
	// tree has one, named by Target's base name).
	Files      map[string]TreeFile
	SingleFile bool
}

// TreeFile is one file's content and mode.
type TreeFile struct {
	Data []byte
	Mode os.FileMode
}

// treeMount is a Tree staged by the parent in its private directory.
type treeMount struct {
	Source     string `json:"source"`
	Target     string `json:"target"`
	SingleFile bool   `json:"singleFile"`
}

// stageTrees writes the trees' files under dir (0700: only the user reads
// them, and only until the first process has copied them into its tmpfs
// mounts and removed them).
func stageTrees(dir string, trees []Tree) ([]treeMount, error) {
	return stageTreesAs(dir, "tree-", trees)
}

func stageTreesAs(dir, prefix string, trees []Tree) ([]treeMount, error) {
	var out []treeMount
	for i, t := range trees {
		src := filepath.Join(dir, prefix+strconv.Itoa(i))
		for rel, f := range t.Files {
			p := filepath.Join(src, filepath.FromSlash(rel))
			if !strings.HasPrefix(p, src+string(filepath.Separator)) {
				return nil, fmt.Errorf("file %q of %s leaves its directory", rel, t.Target)
			}
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				return nil, err
			}
			if err := os.WriteFile(p, f.Data, 0o600); err != nil {
				return nil, err
			}
			if err := os.Chmod(p, f.Mode.Perm()); err != nil {
				return nil, err
			}
		}
		out = append(out, treeMount{Source: src, Target: t.Target, SingleFile: t.SingleFile})
	}
	return out, nil
}

// mountTrees shows each staged tree at its target, then makes them
// read-only and removes the staged copies. scratch is a private
// directory for the mirrors of parents that had to be made writable.
func mountTrees(trees []treeMount, scratch string) error {
	var readOnly []string
	m := &mirror{scratch: scratch, ours: map[string]bool{}}
	for _, t := range trees {
		target, err := resolveTarget(t.Target)
		if err != nil {
			return err
		}
		if t.SingleFile {
			err = m.mountFile(t.Source, target)
		} else {
			err = m.mountDir(t.Source, target)
			readOnly = append(readOnly, target)
		}
		if err != nil {
			return fmt.Errorf("show %s in the namespace: %w", t.Target, err)
		}
		_ = os.RemoveAll(t.Source)
	}
	for _, d := range readOnly {
		if err := unix.Mount("", d, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
			return fmt.Errorf("make %s read-only: %w", d, err)
		}
	}
	return nil
}

// resolveTarget follows the symlinks of the part of p that exists
// (/var/run → /run), so mounts land where the kernel looks.
func resolveTarget(p string) (string, error) {
	p = filepath.Clean(p)
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("mount path %q is not absolute", p)
	}
	existing, rest := p, ""
	for {
		if _, err := os.Lstat(existing); err == nil {
			break
		}
		rest = filepath.Join(filepath.Base(existing), rest)
		existing = filepath.Dir(existing)
	}
	real, err := filepath.EvalSymlinks(existing)
	if err != nil {
		return "", err
	}
	return filepath.Join(real, rest), nil
}

// mirror makes missing paths without touching the workstation's own
// files: a tmpfs covers the nearest existing directory, and each of its
// entries is bound back from a recursive bind of the original (so
// everything there, submounts included, stays visible as it was); the
// missing directories are then made in the tmpfs. Nothing is ever created
// outside a tmpfs of the namespace's own, not even where the user could.
type mirror struct {
	scratch string
	n       int
	ours    map[string]bool // tmpfs roots and directories made in them
}

func (m *mirror) mountDir(src, target string) error {
	if err := m.ensureDir(target); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", target, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		return fmt.Errorf("tmpfs at %s: %w", target, err)
	}
	return copyTree(src, target)
}

func (m *mirror) mountFile(src, target string) error {
	files, err := os.ReadDir(src)
	if err != nil || len(files) != 1 {
		return fmt.Errorf("staged file for %s: %v", target, err)
	}
	parent := filepath.Dir(target)
	if err := m.ensureDir(parent); err != nil {
		return err
	}
	if _, err := os.Lstat(target); errors.Is(err, fs.ErrNotExist) {
		if !m.ours[parent] {
			if err := m.cover(parent); err != nil {
				return err
			}
		}
		if err := os.WriteFile(target, nil, 0o644); err != nil {
			return err
		}
	}
	// A bind of the staged file, which is then unlinked: the mount holds
	// the only reference, so nothing stays behind if detour is killed.
	m.n++
	file := filepath.Join(m.scratch, "file-"+strconv.Itoa(m.n), files[0].Name())
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(src, files[0].Name()), file); err != nil {
		return err
	}
	if err := bindReadOnly(Bind{Source: file, Target: target}); err != nil {
		return err
	}
	return os.Remove(file)
}

// ensureDir makes dir exist: each missing component is made in a tmpfs
// of ours, covering its parent first when the parent is not.
func (m *mirror) ensureDir(dir string) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s exists and is not a directory", dir)
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if err := m.ensureDir(parent); err != nil {
		return err
	}
	if !m.ours[parent] {
		if err := m.cover(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	m.ours[dir] = true
	return nil
}

// cover puts a writable tmpfs over dir that shows what dir held.
func (m *mirror) cover(dir string) error {
	m.n++
	orig := filepath.Join(m.scratch, "orig-"+strconv.Itoa(m.n))
	if err := os.MkdirAll(orig, 0o700); err != nil {
		return err
	}
	if err := unix.Mount(dir, orig, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("keep %s's contents: %w", dir, err)
	}
	entries, err := os.ReadDir(orig)
	if err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		return fmt.Errorf("tmpfs over %s: %w", dir, err)
	}
	m.ours[dir] = true
	for _, e := range entries {
		if err := bindBack(filepath.Join(orig, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// bindBack recreates one entry of a covered directory: a symlink as a
// symlink, anything else as a recursive bind of the original.
func bindBack(src, dst string) error {
	fi, err := os.Lstat(src)
	if err != nil {
		return err
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		link, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return os.Symlink(link, dst)
	case fi.IsDir():
		if err := os.Mkdir(dst, 0o755); err != nil {
			return err
		}
	default:
		if err := os.WriteFile(dst, nil, 0o644); err != nil {
			return err
		}
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s back: %w", dst, err)
	}
	return nil
}

// copyTree copies the staged files into the tmpfs, keeping their modes.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		return copyFile(p, out, fi.Mode().Perm())
	})
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, mode)
}

// updateTrees writes new contents into the directory trees already
// shown: each target is made writable for a moment (the first process
// keeps CAP_SYS_ADMIN in the namespace), rewritten, and made read-only
// again. A directory's files are replaced by rename, so a reader sees the
// old file or the new one; files gone from the tree are removed. Only
// directory trees come here: UpdateTrees keeps files mounted alone
// (subPath mounts) as they are.
func updateTrees(trees []treeMount) error {
	var errs []error
	for _, t := range trees {
		target, err := resolveTarget(t.Target)
		if err == nil {
			err = refreshDir(t.Source, target)
		}
		_ = os.RemoveAll(t.Source)
		if err != nil {
			errs = append(errs, fmt.Errorf("refresh %s: %w", t.Target, err))
		}
	}
	return errors.Join(errs...)
}

func refreshDir(src, target string) error {
	if err := unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("make it writable: %w", err)
	}
	err := syncTree(src, target)
	if rerr := unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); rerr != nil && err == nil {
		err = fmt.Errorf("make it read-only again: %w", rerr)
	}
	return err
}

// syncTree makes dst hold exactly src's files.
func syncTree(src, dst string) error {
	keep := map[string]bool{}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == src {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		keep[rel] = true
		out := filepath.Join(dst, rel)
		if isMountRoot(out) {
			return skipEntry(d) // another tree's mount shows there, as in the pod
		}
		if d.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		tmp := filepath.Join(filepath.Dir(out), ".detour-"+filepath.Base(out))
		if err := copyFile(p, tmp, fi.Mode().Perm()); err != nil {
			return err
		}
		return os.Rename(tmp, out)
	})
	if err != nil {
		return err
	}
	var gone []string
	_ = filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dst {
			return err
		}
		if isMountRoot(p) {
			return skipEntry(d) // a file mounted alone inside the tree: its own
		}
		if rel, _ := filepath.Rel(dst, p); !keep[rel] {
			gone = append(gone, p)
			return skipEntry(d)
		}
		return nil
	})
	for _, p := range gone {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	return nil
}

// isMountRoot tells whether p is the root of a mount of its own (a file
// mounted alone inside a directory tree): such an entry can be neither
// renamed over nor removed, and belongs to the other mount.
func isMountRoot(p string) bool {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS, &stx); err != nil {
		return false
	}
	return stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 && stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0
}

// skipEntry leaves d out of a walk: its subtree if it is a directory.
func skipEntry(d fs.DirEntry) error {
	if d.IsDir() {
		return filepath.SkipDir
	}
	return nil
}
