package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/detour-dev/detour/client/internal/resolve"
	"github.com/detour-dev/detour/client/internal/workload"
	"github.com/detour-dev/detour/internal/annotations"
)

// ErrReplacedByOther: the workload is already replaced by someone else.
var ErrReplacedByOther = errors.New("workload replaced by someone else")

// ErrNotReplaceable: the workload's kind cannot be replaced.
var ErrNotReplaceable = errors.New("kind of workload that --replace does not support")

// ReplaceValue decides the detour.dev/replace value to put on w for user
// (user@host) with grace: the one w already carries when it is user's
// (no roll needed: reuse says so), an error naming the other user when it
// is someone else's. It is pure.
func ReplaceValue(w resolve.Workload, user string, grace time.Duration) (value string, reuse bool, err error) {
	k, err := workload.ByName(w.Kind)
	if err != nil {
		return "", false, err
	}
	if !k.Replaceable {
		var kinds []string
		for _, k := range workload.Kinds {
			if k.Replaceable {
				kinds = append(kinds, k.Name+"s")
			}
		}
		return "", false, fmt.Errorf("%s: --replace works on %s (whose pods detour can give back their app on its own when your workstation goes away), not on a %s: %w",
			w.Ref(), strings.Join(kinds, " and "), k.Name, ErrNotReplaceable)
	}
	if v, ok := w.Template.Annotations[annotations.Replace]; ok {
		old, err := annotations.ParseReplace(v)
		switch {
		case err != nil:
			return "", false, fmt.Errorf("%s: %w: fix or remove it in the pod template (kubectl -n %s edit %s)", w.Ref(), err, w.Namespace, w.Ref())
		case old.By != user:
			return "", false, fmt.Errorf("%s is replaced by %s (detour intercept --replace): only one developer at a time can stop its app; ask them to leave: %w", w.Ref(), old.By, ErrReplacedByOther)
		}
		return v, true, nil
	}
	return annotations.ReplaceSpec{By: user, Grace: grace.String()}.Encode(), false, nil
}

// SetReplace opts the workload in to the agent (with image, when given,
// serving container, when given) and replaces its app container with
// value (a ReplaceSpec), in one patch of its pod template: the pods roll
// once.
func SetReplace(ctx context.Context, cs kubernetes.Interface, w resolve.Workload, value, image, container string) error {
	ann := map[string]any{annotations.Inject: annotations.InjectEnabled, annotations.Replace: value}
	if image != "" {
		ann[annotations.AgentImage] = image
	}
	if container != "" {
		ann[annotations.Container] = container
	}
	return patchTemplateAnnotations(ctx, cs, w, ann)
}

// RemoveReplace gives the workload (kind/name, as a Ref) its app back: it
// removes detour.dev/replace from the pod template while it still has
// value, which rolls the pods. Another developer's replace since, or a
// workload already given back or gone, is left alone and is no error.
func RemoveReplace(ctx context.Context, cs kubernetes.Interface, namespace, ref, value string) error {
	kindAlias, name, ok := strings.Cut(ref, "/")
	k, known := workload.ByAlias(kindAlias)
	if !ok || !known {
		return fmt.Errorf("give %s its app back: not kind/name: %w", ref, workload.ErrUnsupportedKind)
	}
	ws, _, err := k.List(ctx, cs, namespace, metav1.ListOptions{FieldSelector: "metadata.name=" + name})
	if err != nil {
		return fmt.Errorf("give %s in %s its app back: %w", ref, namespace, err)
	}
	i := slices.IndexFunc(ws, func(w workload.Workload) bool { return w.Name == name })
	if i < 0 || ws[i].Template.Annotations[annotations.Replace] != value {
		return nil
	}
	// The test op keeps a replace made between the list and the patch.
	err = k.Patch(ctx, cs, namespace, name, types.JSONPatchType, annotations.TemplateRemovalPatch(annotations.Replace, value), metav1.PatchOptions{FieldManager: "detour"})
	switch {
	case err == nil, apierrors.IsNotFound(err), apierrors.IsInvalid(err):
		// Done, or gone or changed since the list (the API server answers
		// a failed test with 422 Invalid).
		return nil
	default:
		return fmt.Errorf("give %s in %s its app back (remove %s from its pod template): %w", ref, namespace, annotations.Replace, err)
	}
}

// Replaced says whether the pod runs with its app container replaced by
// value's replace.
func Replaced(p corev1.Pod, value string) bool {
	st, err := annotations.ParseStatus(p.Annotations[annotations.Injected])
	return err == nil && st.Replaced && p.Annotations[annotations.Replace] == value
}

// WaitForReplaced waits, like WaitForAgents, until every desired replica
// runs a ready agent, and also until every one of them is replaced with
// value (the pods of the rollout before it are gone).
func WaitForReplaced(ctx context.Context, cs kubernetes.Interface, w resolve.Workload, value string, timeout time.Duration, out io.Writer) ([]corev1.Pod, error) {
	return waitForPods(ctx, cs, w, timeout, out, "replaced, with a ready agent", func(p corev1.Pod) bool { return Replaced(p, value) })
}
