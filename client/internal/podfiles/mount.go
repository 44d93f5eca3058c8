package podfiles

import (
	"path"
	"slices"
	"strings"
)

// Mount is one thing for the namespace side to mount, read-only.
type Mount struct {
	// Dir is the directory to mount a tmpfs at (the volumeMount's
	// mountPath), or, for a SingleFile mount, the directory holding the
	// file.
	Dir string
	// Files by their slash-separated path relative to Dir ("app.yaml",
	// "conf/app.yaml": an item's path may have directories).
	Files map[string]File
	// SingleFile: a subPath mount of one file. Files has exactly one
	// entry, to bind over Dir/name alone; Dir itself is not covered.
	SingleFile bool
}

// Target is what the mount covers: Dir, or the file of a SingleFile
// mount.
func (m Mount) Target() string {
	if m.SingleFile {
		for name := range m.Files {
			return path.Join(m.Dir, name)
		}
	}
	return m.Dir
}

// MountPlan groups files by the mount they belong to (File.Mount): one
// Mount per volumeMount directory, one SingleFile Mount per file mounted
// alone (File.Mount == File.Path). A file with no Mount, or a Path outside
// its Mount, is taken as mounted alone: that never covers a directory
// nobody asked for. The result is sorted by Target, so a mount comes after
// every mount whose directory holds it; mounting in order nests them as
// in the pod. Duplicate paths: the last file wins.
func MountPlan(files []File) []Mount {
	var out []Mount
	dirs := map[string]int{} // Dir → index in out
	for _, f := range files {
		dir, name, single := placeOf(f)
		if single {
			out = append(out, Mount{Dir: dir, Files: map[string]File{name: f}, SingleFile: true})
			continue
		}
		i, ok := dirs[dir]
		if !ok {
			i = len(out)
			dirs[dir] = i
			out = append(out, Mount{Dir: dir, Files: map[string]File{}})
		}
		out[i].Files[name] = f
	}
	slices.SortStableFunc(out, func(a, b Mount) int { return strings.Compare(a.Target(), b.Target()) })
	return out
}

// placeOf finds a file's mount directory and its name there.
func placeOf(f File) (dir, name string, single bool) {
	p := path.Clean(f.Path)
	if f.Mount != "" {
		m := path.Clean(f.Mount)
		if rest, ok := strings.CutPrefix(p, strings.TrimSuffix(m, "/")+"/"); ok && m != p {
			return m, rest, false
		}
	}
	return path.Dir(p), path.Base(p), true
}
