package cli

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/detour-dev/detour/client/internal/kube"
	"github.com/detour-dev/detour/client/internal/resolve"
)

// Shell completion from the cluster: workload names, namespaces, Service
// ports and containers, read with the user's kubeconfig. A completion
// that cannot reach the cluster within completionTimeout offers nothing
// (the shell then offers no file names either).
const completionTimeout = 3 * time.Second

// completeFromCluster adapts f to cobra: it gets a clientset and the
// namespace of the command line being completed.
func (a *app) completeFromCluster(f func(ctx context.Context, cs kubernetes.Interface, ns string, args []string) []string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
		defer cancel()
		ns, _, err := a.namespace()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		_, cs, err := a.clients(ctx)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, s := range f(ctx, cs, ns, args) {
			if strings.HasPrefix(s, toComplete) {
				out = append(out, s)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// workloadNames are the namespace's workloads, as NAME or --workload take
// them (kind/name when two kinds share a name).
func workloadNames(ctx context.Context, cs kubernetes.Interface, ns string, _ []string) []string {
	c, err := kube.Workloads(ctx, cs, ns, labels.Everything())
	if err != nil {
		return nil
	}
	kinds := map[string][]string{}
	for _, w := range c.All() {
		kinds[w.Name] = append(kinds[w.Name], strings.ToLower(w.Kind))
	}
	var out []string
	for name, ks := range kinds {
		if len(ks) == 1 {
			out = append(out, name)
			continue
		}
		for _, k := range ks {
			out = append(out, k+"/"+name)
		}
	}
	slices.Sort(out)
	return out
}

// namespaceNames are the namespaces the user may list.
func namespaceNames(ctx context.Context, cs kubernetes.Interface, _ string, _ []string) []string {
	l, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil
	}
	var out []string
	for _, n := range l.Items {
		out = append(out, n.Name)
	}
	slices.Sort(out)
	return out
}

// targetWorkload is the workload a command line names: --workload, else
// its first argument.
func targetWorkload(cmd *cobra.Command, args []string) string {
	if f := cmd.Flags().Lookup("workload"); f != nil && f.Value.String() != "" {
		return f.Value.String()
	}
	if len(args) > 0 {
		return args[0]
	}
	return ""
}

// portSpecs offers --port values for the workload: LOCAL:SVCPORT for each
// port of the Services that select it, LOCAL the container port it
// reaches (the usual choice for a local copy of the app).
func portSpecs(ctx context.Context, cs kubernetes.Interface, ns, workload string) []string {
	w, ok := findForCompletion(ctx, cs, ns, workload)
	if !ok {
		return nil
	}
	svcs, err := kube.Services(ctx, cs, ns)
	if err != nil {
		return nil
	}
	var out []string
	for _, s := range svcs {
		if !slices.Contains(selecting(w, svcs), s.Name) {
			continue
		}
		for _, sp := range s.Spec.Ports {
			port, _, err := resolve.ContainerPort(w, sp, "")
			if err != nil {
				continue
			}
			name := sp.Name
			if name == "" {
				name = fmt.Sprint(sp.Port)
			}
			out = append(out, fmt.Sprintf("%d:%s", port, name))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// containerNames offers --container values: the workload's containers.
func containerNames(ctx context.Context, cs kubernetes.Interface, ns, workload string) []string {
	w, ok := findForCompletion(ctx, cs, ns, workload)
	if !ok {
		return nil
	}
	var out []string
	for _, c := range w.Template.Spec.Containers {
		out = append(out, c.Name)
	}
	return out
}

func findForCompletion(ctx context.Context, cs kubernetes.Interface, ns, workload string) (resolve.Workload, bool) {
	if workload == "" {
		return resolve.Workload{}, false
	}
	c, err := kube.Workloads(ctx, cs, ns, labels.Everything())
	if err != nil {
		return resolve.Workload{}, false
	}
	w, err := resolve.FindWorkload(workload, ns, c)
	return w, err == nil
}

// addClusterCompletions wires the completions into the command tree.
func (a *app) addClusterCompletions(root *cobra.Command) {
	_ = root.RegisterFlagCompletionFunc("namespace", a.completeFromCluster(namespaceNames))
	for _, c := range root.Commands() {
		switch c.Name() {
		case "intercept":
			c.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
				if len(args) > 0 {
					return nil, cobra.ShellCompDirectiveNoFileComp
				}
				return a.completeFromCluster(workloadNames)(cmd, args, toComplete)
			}
			fallthrough
		case "run", "shell":
			if c.Flags().Lookup("workload") != nil {
				_ = c.RegisterFlagCompletionFunc("workload", a.completeFromCluster(workloadNames))
			}
			if c.Flags().Lookup("port") != nil {
				_ = c.RegisterFlagCompletionFunc("port", func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
					w := targetWorkload(cmd, args)
					return a.completeFromCluster(func(ctx context.Context, cs kubernetes.Interface, ns string, _ []string) []string {
						return portSpecs(ctx, cs, ns, w)
					})(cmd, args, toComplete)
				})
			}
			if c.Flags().Lookup("container") != nil {
				_ = c.RegisterFlagCompletionFunc("container", func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
					w := targetWorkload(cmd, args)
					return a.completeFromCluster(func(ctx context.Context, cs kubernetes.Interface, ns string, _ []string) []string {
						return containerNames(ctx, cs, ns, w)
					})(cmd, args, toComplete)
				})
			}
		}
	}
}
