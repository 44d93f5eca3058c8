package podfiles

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// api reads objects as the user, each at most once per Read or Env: a
// Secret used by two volumes is fetched once (its error too).
type api struct {
	cs         kubernetes.Interface
	ns         string
	configMaps map[string]got[*corev1.ConfigMap]
	secrets    map[string]got[*corev1.Secret]
	nodes      map[string]got[*corev1.Node]
}

type got[T any] struct {
	obj T
	err error
}

func newAPI(cs kubernetes.Interface, ns string) *api {
	return &api{
		cs: cs, ns: ns,
		configMaps: map[string]got[*corev1.ConfigMap]{},
		secrets:    map[string]got[*corev1.Secret]{},
		nodes:      map[string]got[*corev1.Node]{},
	}
}

func cached[T any](ctx context.Context, seen map[string]got[T], name string, get func(context.Context, string, metav1.GetOptions) (T, error)) (T, error) {
	if g, ok := seen[name]; ok {
		return g.obj, g.err
	}
	obj, err := get(ctx, name, metav1.GetOptions{})
	seen[name] = got[T]{obj, err}
	return obj, err
}

func (a *api) configMap(ctx context.Context, name string) (*corev1.ConfigMap, error) {
	return cached(ctx, a.configMaps, name, a.cs.CoreV1().ConfigMaps(a.ns).Get)
}

func (a *api) secret(ctx context.Context, name string) (*corev1.Secret, error) {
	return cached(ctx, a.secrets, name, a.cs.CoreV1().Secrets(a.ns).Get)
}

func (a *api) node(ctx context.Context, name string) (*corev1.Node, error) {
	return cached(ctx, a.nodes, name, a.cs.CoreV1().Nodes().Get)
}

// access is one request made as the user, as the notes name it.
type access struct {
	verb, resource string
	namespace      string // "" for a cluster-scoped resource
	object         string // `secret "tls"`
}

func (a access) where() string {
	if a.namespace == "" {
		return ""
	}
	return " in namespace " + a.namespace
}

func secretAccess(ns, name string) access {
	return access{verb: "get", resource: "secrets", namespace: ns, object: fmt.Sprintf("secret %q", name)}
}

func configMapAccess(ns, name string) access {
	return access{verb: "get", resource: "configmaps", namespace: ns, object: fmt.Sprintf("configMap %q", name)}
}

// use is what an object is read for, as a note names it.
type use struct {
	path, kind string // the Note's
	subject    string // what the user goes without: "/etc/tls", "DB_PASSWORD"
	lost       string // "is not mirrored", "is not set"
	optional   bool   // a missing object is no loss
}

// absent handles an error of request a: a 403 becomes a Denied note, a
// 404 a note unless u is optional; any other error is returned, wrapped.
func (r *reader) absent(err error, a access, u use) error {
	switch {
	case apierrors.IsForbidden(err):
		r.notes = append(r.notes, Note{Path: u.path, Kind: u.kind, Denied: true,
			Why: fmt.Sprintf("you lack %s on %s%s: %s (%s) %s; ask for it or run without it", a.verb, a.resource, a.where(), u.subject, a.object, u.lost)})
	case apierrors.IsNotFound(err):
		if !u.optional {
			r.note(u.path, u.kind, fmt.Sprintf("%s was not found%s: %s %s", a.object, a.where(), u.subject, u.lost))
		}
	default:
		return fmt.Errorf("%s %s%s: %w", a.verb, a.object, a.where(), err)
	}
	return nil
}

// missingKey notes a key that obj lacks, unless u is optional.
func (r *reader) missingKey(object, key string, u use) {
	if !u.optional {
		r.note(u.path, u.kind, fmt.Sprintf("%s has no key %q: %s %s", object, key, u.subject, u.lost))
	}
}
