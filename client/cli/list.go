package cli

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/detour-dev/detour/client/internal/kube"
	"github.com/detour-dev/detour/client/internal/resolve"
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

func (a *app) listCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the namespace's interceptable workloads, their agents and your intercepts",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			ns, cs, cands, err := a.namespaceWorkloads(ctx)
			if err != nil {
				return err
			}
			svcs, err := kube.Services(ctx, cs, ns)
			if err != nil {
				return err
			}
			mine := map[string][]string{}
			takes := map[string]string{} // what each of your http intercepts takes, for the table
			if dc, err := a.daemonClient(); err == nil {
				if st, err := dc.Status(ctx); err == nil {
					for _, ic := range st.Intercepts {
						if ic.Namespace == ns {
							mine[ic.Workload] = append(mine[ic.Workload], ic.Name)
							if len(ic.HTTPMatch) > 0 {
								takes[ic.Name] = httpTakes(ic.HTTPMatch, ic.MechanismArgs)
							}
						}
					}
				}
			}
			var ws []resolve.Workload
			for _, d := range cands.Deployments {
				ws = append(ws, resolve.Workload{Kind: resolve.KindDeployment, Name: d.Name, Namespace: ns, Selector: d.Spec.Selector, Template: d.Spec.Template})
			}
			for _, rs := range cands.ReplicaSets {
				if metav1.GetControllerOf(&rs) == nil {
					ws = append(ws, resolve.Workload{Kind: resolve.KindReplicaSet, Name: rs.Name, Namespace: ns, Selector: rs.Spec.Selector, Template: rs.Spec.Template})
				}
			}
			for _, s := range cands.StatefulSets {
				ws = append(ws, resolve.Workload{Kind: resolve.KindStatefulSet, Name: s.Name, Namespace: ns, Selector: s.Spec.Selector, Template: s.Spec.Template})
			}
			entries := []ListEntry{}
			for _, w := range ws {
				ready, total, err := kube.AgentPods(ctx, cs, w)
				if err != nil {
					return err
				}
				entries = append(entries, ListEntry{Workload: w.Ref(), Namespace: ns, Services: selecting(w, svcs),
					AgentOptIn: kube.Injected(w), AgentPods: len(ready), Pods: total, Intercepted: mine[w.Ref()]})
			}
			sort.Slice(entries, func(i, j int) bool { return entries[i].Workload < entries[j].Workload })
			if output != "" {
				return printStructured(a.out, output, entries)
			}
			if len(entries) == 0 {
				fmt.Fprintf(a.out, "No Deployments, ReplicaSets or StatefulSets in namespace %s.\n", ns)
				return nil
			}
			tw := newTable(a.out, "WORKLOAD", "SERVICES", "AGENT", "INTERCEPTED BY YOU")
			for _, e := range entries {
				agent := "no"
				if e.AgentOptIn {
					agent = fmt.Sprintf("yes (%d/%d pods)", e.AgentPods, e.Pods)
				}
				tw.row(e.Workload, orDash(strings.Join(e.Services, ",")), agent, orDash(strings.Join(e.Intercepted, ",")))
				for _, name := range e.Intercepted {
					if t := takes[name]; t != "" {
						tw.row("", "", "", "  "+name+": "+t)
					}
				}
			}
			return tw.flush()
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func selecting(w resolve.Workload, svcs []corev1.Service) []string {
	var names []string
	for _, s := range svcs {
		if len(s.Spec.Selector) > 0 && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(w.Template.Labels)) {
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
