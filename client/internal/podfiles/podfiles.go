package podfiles

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/detour-dev/detour/internal/annotations"
)

// ErrNoContainer means the pod has no container of the name asked for.
var ErrNoContainer = errors.New("no such container in the pod")

// File is one file of the pod, as its app container sees it.
type File struct {
	// Path is where the container sees the file: absolute and clean.
	Path string
	Data []byte
	// Mode holds the permission bits the kubelet gives the file.
	Mode os.FileMode
	// Mount is the mountPath of the volumeMount the file comes from: the
	// directory the volume is mounted at, or Path itself when the mount is
	// this one file (a subPath naming a file).
	Mount string
}

// Note says why something the app container sees is not reproduced.
type Note struct {
	// Path is the mount or file path; for Env, the variable's name, or
	// PREFIX* for an envFrom source.
	Path string
	// Kind is what it is, as the pod spec names it: a volume type
	// (emptyDir, persistentVolumeClaim, secret, …), a projected source
	// (serviceAccountToken, …), an env source (secretKeyRef, envFrom, …).
	Kind string
	// Why is the sentence to show the user.
	Why string
	// Denied is set when the API refused the user (403).
	Denied bool
}

// String is the note's sentence.
func (n Note) String() string { return n.Why }

// Plan is what Read found for the app container's volume mounts.
type Plan struct {
	// Files are in the order of the container's volumeMounts; within a
	// volume, in the order of its items, or of its keys when it has none.
	Files []File
	// NotMirrored are mounts and files left out for any reason but RBAC.
	NotMirrored []Note
	// Denied are the ones the API refused the user.
	Denied []Note
	// TokenTTL is the shortest lifetime of the service-account tokens in
	// Files (zero when there are none): Read again before it ends — the
	// kubelet renews at 80 % of it — to keep a long-running command's
	// token valid.
	TokenTTL time.Duration
}

// Read plans the files of pod's container: see the package documentation.
// cs carries the user's own credentials. A 403 is a Denied note, not an
// error; the error is for a container that does not exist and for API
// failures other than 403 and 404.
func Read(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod, container string) (Plan, error) {
	c, err := findContainer(pod, container)
	if err != nil {
		return Plan{}, err
	}
	r := newReader(cs, pod, c)
	volumes := make(map[string]*corev1.Volume, len(pod.Spec.Volumes))
	for i := range pod.Spec.Volumes {
		volumes[pod.Spec.Volumes[i].Name] = &pod.Spec.Volumes[i]
	}
	for _, m := range c.VolumeMounts {
		if err := r.mount(ctx, m, volumes[m.Name]); err != nil {
			return Plan{}, err
		}
	}
	plan := Plan{Files: r.files, TokenTTL: r.tokenTTL}
	for _, n := range r.notes {
		if n.Denied {
			plan.Denied = append(plan.Denied, n)
		} else {
			plan.NotMirrored = append(plan.NotMirrored, n)
		}
	}
	return plan, nil
}

// AppContainer names pod's app container as the webhook chose it: the
// container recorded in the pod's detour.dev/injected annotation.
func AppContainer(pod *corev1.Pod) (string, error) {
	v, ok := pod.Annotations[annotations.Injected]
	if !ok {
		return "", fmt.Errorf("%w: pod %s/%s has no %s annotation; is detour's agent injected?", ErrNoContainer, pod.Namespace, pod.Name, annotations.Injected)
	}
	s, err := annotations.ParseStatus(v)
	if err != nil {
		return "", fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return s.Container, nil
}

func findContainer(pod *corev1.Pod, name string) (*corev1.Container, error) {
	names := make([]string, 0, len(pod.Spec.Containers))
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i], nil
		}
		names = append(names, pod.Spec.Containers[i].Name)
	}
	return nil, fmt.Errorf("%w: pod %s/%s has no container %q (it has %s)", ErrNoContainer, pod.Namespace, pod.Name, name, strings.Join(names, ", "))
}

// reader holds one Read's or Env's state: the objects fetched so far and
// what it found.
type reader struct {
	api       *api
	pod       *corev1.Pod
	container *corev1.Container
	files     []File
	notes     []Note
	tokenTTL  time.Duration // the shortest token lifetime read
}

func newReader(cs kubernetes.Interface, pod *corev1.Pod, c *corev1.Container) *reader {
	return &reader{api: newAPI(cs, pod.Namespace), pod: pod, container: c}
}

func (r *reader) note(p, kind, why string) {
	r.notes = append(r.notes, Note{Path: p, Kind: kind, Why: why})
}

// entry is a file relative to its volume's root.
type entry struct {
	name string // slash-separated, clean, inside the volume
	data []byte
	mode os.FileMode
}

// mount adds the files of one volumeMount, or a note saying why not.
func (r *reader) mount(ctx context.Context, m corev1.VolumeMount, vol *corev1.Volume) error {
	at := path.Clean(m.MountPath)
	switch {
	case vol == nil:
		r.note(at, "volume", fmt.Sprintf("%s is not mirrored: the pod has no volume %q", at, m.Name))
		return nil
	case !path.IsAbs(at):
		r.note(at, kindOf(vol.VolumeSource), fmt.Sprintf("%s is not mirrored: it is not an absolute path", m.MountPath))
		return nil
	case m.SubPathExpr != "":
		r.note(at, kindOf(vol.VolumeSource), fmt.Sprintf("%s is not mirrored: its subPathExpr %q is expanded only in the pod", at, m.SubPathExpr))
		return nil
	}
	before := len(r.notes)
	entries, mirrored, err := r.volume(ctx, vol.VolumeSource, at)
	if err != nil || !mirrored {
		return err
	}
	r.place(at, m.SubPath, kindOf(vol.VolumeSource), entries, len(r.notes) > before)
	return nil
}

// place turns a volume's entries into files under the mount path; with a
// subPath, only what lies at or under it. explained: a note already says
// why some of the volume is missing, so a subPath found in none of its
// files needs no note of its own.
func (r *reader) place(at, subPath, kind string, entries []entry, explained bool) {
	if subPath == "" {
		for _, e := range entries {
			r.files = append(r.files, File{Path: path.Join(at, e.name), Data: e.data, Mode: e.mode, Mount: at})
		}
		return
	}
	sub := path.Clean(subPath)
	var found []File
	for _, e := range entries {
		if e.name == sub {
			r.files = append(r.files, File{Path: at, Data: e.data, Mode: e.mode, Mount: at})
			return
		}
		if rest, ok := strings.CutPrefix(e.name, sub+"/"); ok {
			found = append(found, File{Path: path.Join(at, rest), Data: e.data, Mode: e.mode, Mount: at})
		}
	}
	if len(found) == 0 && !explained {
		r.note(at, kind, fmt.Sprintf("%s is not mirrored: its subPath %q is in none of the volume's files", at, subPath))
	}
	r.files = append(r.files, found...)
}
