package podfiles

import (
	"context"
	"fmt"
	"os"
	"path"
	"reflect"
	"slices"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// defaultMode is the API's default for configMap, secret, downwardAPI and
// projected volumes (the apiserver fills it in; a pod built by hand may
// lack it).
const defaultMode os.FileMode = 0o644

const notMirrored = "is not mirrored"

// volume reads the entries of a volume mounted at at. mirrored is false
// for a kind of volume detour does not mirror; a note says why.
func (r *reader) volume(ctx context.Context, s corev1.VolumeSource, at string) (entries []entry, mirrored bool, err error) {
	switch {
	case s.ConfigMap != nil:
		c := s.ConfigMap
		entries, err = r.configMapFiles(ctx, c.Name, c.Items, modeOr(c.DefaultMode, defaultMode), isTrue(c.Optional), at)
	case s.Secret != nil:
		c := s.Secret
		entries, err = r.secretFiles(ctx, c.SecretName, c.Items, modeOr(c.DefaultMode, defaultMode), isTrue(c.Optional), at)
	case s.DownwardAPI != nil:
		entries, err = r.downwardFiles(ctx, s.DownwardAPI.Items, modeOr(s.DownwardAPI.DefaultMode, defaultMode), at)
	case s.Projected != nil:
		entries, err = r.projected(ctx, s.Projected, at)
	default:
		r.note(at, kindOf(s), whyNotMirrored(s, at))
		return nil, false, nil
	}
	return entries, true, err
}

func (r *reader) configMapFiles(ctx context.Context, name string, items []corev1.KeyToPath, mode os.FileMode, optional bool, at string) ([]entry, error) {
	u := use{path: at, kind: "configMap", subject: at, lost: notMirrored, optional: optional}
	cm, err := r.api.configMap(ctx, name)
	if err != nil {
		return nil, r.absent(err, configMapAccess(r.pod.Namespace, name), u)
	}
	data := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return r.keyed(fmt.Sprintf("configMap %q", name), data, items, mode, u), nil
}

func (r *reader) secretFiles(ctx context.Context, name string, items []corev1.KeyToPath, mode os.FileMode, optional bool, at string) ([]entry, error) {
	u := use{path: at, kind: "secret", subject: at, lost: notMirrored, optional: optional}
	s, err := r.api.secret(ctx, name)
	if err != nil {
		return nil, r.absent(err, secretAccess(r.pod.Namespace, name), u)
	}
	return r.keyed(fmt.Sprintf("secret %q", name), s.Data, items, mode, u), nil
}

// keyed lays out the keys of a ConfigMap or Secret: every key as a file
// of its name, or only the items, each at its path with its mode.
func (r *reader) keyed(object string, data map[string][]byte, items []corev1.KeyToPath, mode os.FileMode, u use) []entry {
	var out []entry
	if len(items) == 0 {
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if name, ok := r.relative(k, u.path, u.kind); ok {
				out = append(out, entry{name: name, data: data[k], mode: mode})
			}
		}
		return out
	}
	for _, it := range items {
		name, ok := r.relative(it.Path, u.path, u.kind)
		if !ok {
			continue
		}
		v, found := data[it.Key]
		if !found {
			iu := u
			iu.path = path.Join(u.path, name)
			iu.subject = iu.path
			r.missingKey(object, it.Key, iu)
			continue
		}
		out = append(out, entry{name: name, data: v, mode: modeOr(it.Mode, mode)})
	}
	return out
}

func (r *reader) downwardFiles(ctx context.Context, items []corev1.DownwardAPIVolumeFile, mode os.FileMode, at string) ([]entry, error) {
	var out []entry
	for _, it := range items {
		name, ok := r.relative(it.Path, at, "downwardAPI")
		if !ok {
			continue
		}
		p := path.Join(at, name)
		v, ok, err := r.downward(ctx, it.FieldRef, it.ResourceFieldRef, use{path: p, kind: "downwardAPI", subject: p, lost: notMirrored})
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, entry{name: name, data: []byte(v), mode: modeOr(it.Mode, mode)})
		}
	}
	return out, nil
}

// projected reads every source of a projected volume; one that cannot be
// read is a note, and the others are still mirrored.
func (r *reader) projected(ctx context.Context, p *corev1.ProjectedVolumeSource, at string) ([]entry, error) {
	mode := modeOr(p.DefaultMode, defaultMode)
	var out []entry
	for _, s := range p.Sources {
		var (
			e   []entry
			err error
		)
		switch {
		case s.ConfigMap != nil:
			e, err = r.configMapFiles(ctx, s.ConfigMap.Name, s.ConfigMap.Items, mode, isTrue(s.ConfigMap.Optional), at)
		case s.Secret != nil:
			e, err = r.secretFiles(ctx, s.Secret.Name, s.Secret.Items, mode, isTrue(s.Secret.Optional), at)
		case s.DownwardAPI != nil:
			e, err = r.downwardFiles(ctx, s.DownwardAPI.Items, mode, at)
		case s.ServiceAccountToken != nil:
			e, err = r.token(ctx, s.ServiceAccountToken, r.credentialMode(p, s.ServiceAccountToken.User, mode), at)
		case s.ClusterTrustBundle != nil:
			p := path.Join(at, s.ClusterTrustBundle.Path)
			r.note(p, "clusterTrustBundle", fmt.Sprintf("%s is not mirrored: detour does not read ClusterTrustBundles", p))
		case s.PodCertificate != nil:
			r.note(at, "podCertificate", fmt.Sprintf("the podCertificate files under %s are not mirrored: their private key is the kubelet's, for this pod only", at))
		}
		if err != nil {
			return nil, err
		}
		out = append(out, e...)
	}
	return out, nil
}

// token is a serviceAccountToken source: a TokenRequest for the pod's
// service account, bound to the pod as the kubelet's is, made as the user
// (create on serviceaccounts/token).
func (r *reader) token(ctx context.Context, tp *corev1.ServiceAccountTokenProjection, mode os.FileMode, at string) ([]entry, error) {
	name, ok := r.relative(tp.Path, at, "serviceAccountToken")
	if !ok {
		return nil, nil
	}
	sa := r.pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	var audiences []string
	if tp.Audience != "" {
		audiences = []string{tp.Audience}
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences:         audiences,
		ExpirationSeconds: tp.ExpirationSeconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{APIVersion: "v1", Kind: "Pod", Name: r.pod.Name, UID: r.pod.UID},
	}}
	tr, err := r.api.cs.CoreV1().ServiceAccounts(r.pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		p := path.Join(at, name)
		a := access{verb: "create", resource: "serviceaccounts/token", namespace: r.pod.Namespace, object: fmt.Sprintf("service account %q", sa)}
		return nil, r.absent(err, a, use{path: p, kind: "serviceAccountToken", subject: p, lost: notMirrored})
	}
	ttl := time.Duration(defaultTokenSeconds) * time.Second
	if tp.ExpirationSeconds != nil {
		ttl = time.Duration(*tp.ExpirationSeconds) * time.Second
	}
	if r.tokenTTL == 0 || ttl < r.tokenTTL {
		r.tokenTTL = ttl
	}
	return []entry{{name: name, data: []byte(tr.Status.Token), mode: mode}}, nil
}

// defaultTokenSeconds is a projected token's lifetime when the pod spec
// gives none (the API's default expirationSeconds).
const defaultTokenSeconds = 3600

// credentialMode is the kubelet's mode for a token: 0600 when the volume's
// files get an owner (fsGroup, defaultUser, user), else the volume's mode.
func (r *reader) credentialMode(p *corev1.ProjectedVolumeSource, user *int64, mode os.FileMode) os.FileMode {
	sc := r.pod.Spec.SecurityContext
	if (sc != nil && sc.FSGroup != nil) || p.DefaultUser != nil || user != nil {
		return 0o600
	}
	return mode
}

// relative checks a path inside a volume (an item's path, a key): clean,
// relative and not climbing out. The apiserver rejects other paths; this
// keeps a hand-made pod from writing outside its mount.
func (r *reader) relative(p, at, kind string) (string, bool) {
	c := path.Clean(p)
	if p == "" || path.IsAbs(c) || c == "." || c == ".." || strings.HasPrefix(c, "../") {
		r.note(at, kind, fmt.Sprintf("%q under %s is not mirrored: it is not a path inside the volume", p, at))
		return "", false
	}
	return c, true
}

// whyNotMirrored explains a volume detour does not copy.
func whyNotMirrored(s corev1.VolumeSource, at string) string {
	switch {
	case s.EmptyDir != nil:
		return fmt.Sprintf("emptyDir %s is not mirrored: it lives only in the pod", at)
	case s.PersistentVolumeClaim != nil:
		return fmt.Sprintf("persistentVolumeClaim %s (claim %q) is not mirrored: its data stays on the cluster's storage", at, s.PersistentVolumeClaim.ClaimName)
	case s.Ephemeral != nil:
		return fmt.Sprintf("ephemeral %s is not mirrored: its storage exists only for the pod", at)
	case s.HostPath != nil:
		return fmt.Sprintf("hostPath %s (%s on the node) is not mirrored: it is the node's filesystem", at, s.HostPath.Path)
	case s.Image != nil:
		return fmt.Sprintf("image %s (%s) is not mirrored: the node's runtime mounts it", at, s.Image.Reference)
	}
	return fmt.Sprintf("%s %s is not mirrored: detour mirrors only configMap, secret, downwardAPI and projected volumes", kindOf(s), at)
}

// kindOf names a volume's type as the pod spec does: the JSON name of its
// one set source.
func kindOf(s corev1.VolumeSource) string {
	v := reflect.ValueOf(s)
	t := v.Type()
	for i := range t.NumField() {
		if f := v.Field(i); f.Kind() == reflect.Pointer && !f.IsNil() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
			return name
		}
	}
	return "volume"
}

func modeOr(m *int32, def os.FileMode) os.FileMode {
	if m == nil {
		return def
	}
	return os.FileMode(*m) & os.ModePerm
}

func isTrue(b *bool) bool { return b != nil && *b }
