package cli

import (
	"context"
	"fmt"
	"io"
	"path"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/detour-dev/detour/client/internal/kube"
	"github.com/detour-dev/detour/client/internal/nsexec"
	"github.com/detour-dev/detour/client/internal/podfiles"
	"github.com/detour-dev/detour/client/internal/resolve"
)

// podView is what CMD sees of a pod of the workload besides its network:
// the app container's environment and files, read from the Kubernetes API
// with the user's own permissions — never from the agent, so a
// port-forward is no way around RBAC for a Secret.
type podView struct {
	env   map[string]string
	trees []nsexec.Tree
	notes []string
	// refresh reads the trees again; every refreshEvery (80 % of the
	// shortest token's lifetime, as the kubelet renews) when non-zero.
	refresh      func(ctx context.Context) ([]nsexec.Tree, error)
	refreshEvery time.Duration
}

// readPodView reads the view of the workload's first pod with an agent.
// withFiles: also the volumes (for a namespace; an env file needs none).
func readPodView(ctx context.Context, cs kubernetes.Interface, w resolve.Workload, withFiles bool) (podView, error) {
	pods, _, err := kube.AgentPods(ctx, cs, w)
	if err != nil {
		return podView{}, err
	}
	if len(pods) == 0 {
		return podView{}, fmt.Errorf("%s has no pod with a ready agent to read the app's environment from", w.Ref())
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	pod := &pods[0]
	container, err := podfiles.AppContainer(pod)
	if err != nil {
		return podView{}, err
	}
	var v podView
	env, notes, err := podfiles.Env(ctx, cs, pod, container)
	if err != nil {
		return podView{}, fmt.Errorf("read the app's environment: %w", err)
	}
	v.env = env
	v.notes = noteStrings(notes)
	if withFiles {
		if err := v.readFiles(ctx, cs, pod, container); err != nil {
			return podView{}, err
		}
	}
	return v, nil
}

func (v *podView) readFiles(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod, container string) error {
	plan, err := podfiles.Read(ctx, cs, pod, container)
	if err != nil {
		return fmt.Errorf("read the app's files: %w", err)
	}
	v.notes = append(v.notes, noteStrings(plan.Denied)...)
	v.notes = append(v.notes, noteStrings(plan.NotMirrored)...)
	v.trees = treesOf(plan)
	if plan.TokenTTL > 0 {
		v.refreshEvery = plan.TokenTTL * 4 / 5
		v.refresh = func(ctx context.Context) ([]nsexec.Tree, error) {
			again, err := podfiles.Read(ctx, cs, pod, container)
			if err != nil {
				return nil, err
			}
			trees := treesOf(again)
			if !sameTargets(trees, v.trees) {
				// What the user may read changed (a grant, a revoke): a
				// tree cannot appear or vanish under a running command.
				return nil, fmt.Errorf("the set of the pod's files changed since CMD started; restart it to see the new set")
			}
			return trees, nil
		}
	}
	return nil
}

// treesOf turns a plan into the namespace's trees, one per mount.
func treesOf(plan podfiles.Plan) []nsexec.Tree {
	var trees []nsexec.Tree
	for _, m := range podfiles.MountPlan(plan.Files) {
		t := nsexec.Tree{Target: m.Target(), SingleFile: m.SingleFile, Files: map[string]nsexec.TreeFile{}}
		for name, f := range m.Files {
			if m.SingleFile {
				name = path.Base(m.Target())
			}
			t.Files[name] = nsexec.TreeFile{Data: f.Data, Mode: f.Mode}
		}
		trees = append(trees, t)
	}
	return trees
}

func sameTargets(a, b []nsexec.Tree) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Target != b[i].Target || a[i].SingleFile != b[i].SingleFile {
			return false
		}
	}
	return true
}

func noteStrings(notes []podfiles.Note) []string {
	out := make([]string, 0, len(notes))
	for _, n := range notes {
		out = append(out, n.String())
	}
	return out
}

// mergeEnv is the agent's report (what needs no permission: the service
// links, the downward API) overlaid with what the user's own reads gave.
func mergeEnv(agent, user map[string]string) map[string]string {
	out := make(map[string]string, len(agent)+len(user))
	for k, val := range agent {
		out[k] = val
	}
	for k, val := range user {
		out[k] = val
	}
	return out
}

func printNotes(w io.Writer, notes []string) {
	for _, n := range notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}
