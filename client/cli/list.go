package cli

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/detour-dev/detour/client/internal/kube"
	"github.com/detour-dev/detour/client/internal/resolve"
	"github.com/detour-dev/detour/internal/podport"
	"github.com/detour-dev/detour/tunnel"
)

// ListEntry is one row of `detour list -o json`.
type ListEntry struct {
	Workload    string   `json:"workload"`
	Namespace   string   `json:"namespace"`
	Services    []string `json:"services"`
	AgentOptIn  bool     `json:"agentOptIn"`
	AgentPods   int      `json:"agentPods"`
	Pods        int      `json:"pods"`
	Intercepted []string `json:"interceptedBy,omitempty"` // your intercepts on it
}

// listFlags are list's flags.
type listFlags struct {
	output, selector string
	all              bool
}

func (a *app) listCommand() *cobra.Command {
	var f listFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the namespace's interceptable workloads, their agents and your intercepts",
		Long: `List the Deployments, ReplicaSets, StatefulSets and Argo Rollouts of the
namespace (-n, else the kubeconfig's), or of every namespace you may list
(-A), with the Services that select them, whether the detour agent runs in
their pods, and your intercepts on them. -l keeps the workloads whose labels
match a selector, as kubectl's -l does.`,
		Example: `  detour list -n shop
  detour list -A -l team=payments
  detour list -o json`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			sel, err := labels.Parse(f.selector)
			if err != nil {
				return usagef("-l %q is not a label selector (e.g. app=web or 'tier in (web,api)'): %v", f.selector, err)
			}
			if f.output != "" && f.output != "json" && f.output != "yaml" {
				return usagef("-o %q: use json or yaml", f.output)
			}
			ctx := cmd.Context()
			ns := metav1.NamespaceAll
			if !f.all {
				if ns, _, err = a.namespace(); err != nil {
					return err
				}
			}
			_, cs, err := a.clients(ctx)
			if err != nil {
				return err
			}
			if !f.all {
				if _, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
					return fmt.Errorf("namespace %q: %w", ns, err)
				}
			}
			mine, takes := a.yourIntercepts(ctx)
			entries, err := listWorkloads(ctx, cs, ns, sel, mine)
			if err != nil {
				return err
			}
			if f.output != "" {
				return printStructured(a.out, f.output, entries)
			}
			return a.printList(entries, ns, f, takes)
		},
	}
	addOutputFlag(cmd, &f.output)
	cmd.Flags().BoolVarP(&f.all, "all-namespaces", "A", false, "list the workloads of every namespace you may list")
	cmd.Flags().StringVarP(&f.selector, "selector", "l", "", "only workloads whose labels match this selector (e.g. app=web, 'tier in (web,api)', '!canary')")
	return cmd
}

// yourIntercepts asks the daemon (if it runs) for your intercepts, by
// namespace/workload, and what each http one takes, for the table.
func (a *app) yourIntercepts(ctx context.Context) (mine map[string][]string, takes map[string]string) {
	mine, takes = map[string][]string{}, map[string]string{}
	dc, err := a.daemonClient()
	if err != nil {
		return mine, takes
	}
	st, err := dc.Status(ctx)
	if err != nil {
		return mine, takes
	}
	for _, ic := range st.Intercepts {
		key := ic.Namespace + "/" + ic.Workload
		mine[key] = append(mine[key], ic.Name)
		if len(ic.HTTPMatch) > 0 || tunnel.IsMirror(ic.Mechanism) {
			takes[ic.Name] = takesOf(ic.Mechanism, ic.HTTPMatch, ic.First().MechanismArgs)
		}
	}
	return mine, takes
}

// listWorkloads builds list's rows: the workloads sel matches in ns
// ("" for all), sorted by namespace and name; mine is keyed NS/KIND/NAME.
func listWorkloads(ctx context.Context, cs kubernetes.Interface, ns string, sel labels.Selector, mine map[string][]string) ([]ListEntry, error) {
	cands, err := kube.Workloads(ctx, cs, ns, sel)
	if err != nil {
		return nil, err
	}
	svcs, err := kube.Services(ctx, cs, ns)
	if err != nil {
		return nil, err
	}
	ws := cands.All()
	entries := []ListEntry{}
	for _, w := range ws {
		ready, total, err := kube.AgentPods(ctx, cs, w)
		if err != nil {
			return nil, err
		}
		entries = append(entries, ListEntry{Workload: w.Ref(), Namespace: w.Namespace, Services: selecting(w, svcs),
			AgentOptIn: kube.Injected(w), AgentPods: len(ready), Pods: total, Intercepted: mine[w.Namespace+"/"+w.Ref()]})
	}
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].Namespace != entries[j].Namespace {
			return entries[i].Namespace < entries[j].Namespace
		}
		return entries[i].Workload < entries[j].Workload
	})
	return entries, nil
}

// printList is list's table; with -A it has a NAMESPACE column.
func (a *app) printList(entries []ListEntry, ns string, f listFlags, takes map[string]string) error {
	if len(entries) == 0 {
		where := "in namespace " + ns
		if f.all {
			where = "in any namespace you may list"
		}
		if f.selector != "" {
			where += " matching " + f.selector
		}
		fmt.Fprintf(a.out, "No Deployments, ReplicaSets, StatefulSets or Rollouts %s.\n", where)
		return nil
	}
	cols := []string{"WORKLOAD", "SERVICES", "AGENT", "INTERCEPTED BY YOU"}
	if f.all {
		cols = append([]string{"NAMESPACE"}, cols...)
	}
	tw := newTable(a.out, cols...)
	row := func(e ListEntry, cells ...string) {
		if f.all {
			cells = append([]string{e.Namespace}, cells...)
		}
		tw.row(cells...)
	}
	for _, e := range entries {
		agent := "no"
		if e.AgentOptIn {
			agent = fmt.Sprintf("yes (%d/%d pods)", e.AgentPods, e.Pods)
		}
		row(e, e.Workload, orDash(strings.Join(e.Services, ",")), agent, orDash(strings.Join(e.Intercepted, ",")))
		for _, name := range e.Intercepted {
			if t := takes[name]; t != "" {
				row(ListEntry{}, "", "", "", "  "+name+": "+t)
			}
		}
	}
	return tw.flush()
}

func selecting(w resolve.Workload, svcs []corev1.Service) []string {
	var names []string
	for _, s := range svcs {
		if s.Namespace == w.Namespace && podport.Selects(s, w.Template.Labels) {
			names = append(names, s.Name)
		}
	}
	return names
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
