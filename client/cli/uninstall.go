package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/detour-dev/detour/client/internal/kube"
	"github.com/detour-dev/detour/client/internal/resolve"
)

func (a *app) uninstallCommand() *cobra.Command {
	var agent string
	var all bool
	cmd := &cobra.Command{
		Use:   "uninstall --agent WORKLOAD | --all",
		Short: "Remove the detour agent from a workload, or detour from the cluster",
		Long: `--agent WORKLOAD removes the detour.dev/inject annotation from the
workload's pod template; its pods roll without the agent.
--all removes what detour install created and the agent from every workload.`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case all && agent != "":
				return usagef("give --agent WORKLOAD or --all, not both")
			case all:
				return a.uninstallAll(cmd)
			case agent == "":
				return usagef("say what to uninstall: --agent WORKLOAD, or --all")
			}
			ctx := cmd.Context()
			ns, cs, cands, err := a.namespaceWorkloads(ctx)
			if err != nil {
				return err
			}
			w, err := resolve.FindWorkload(agent, ns, cands)
			if err != nil {
				return err
			}
			if !kube.Injected(w) {
				fmt.Fprintf(a.out, "%s in %s does not have the detour agent.\n", w.Ref(), ns)
				return nil
			}
			if err := kube.SetInjection(ctx, cs, w, false, ""); err != nil {
				return err
			}
			fmt.Fprintf(a.out, "Removed the detour agent from %s in %s; its pods are rolling.\n", w.Ref(), ns)
			return nil
		},
	}
	cmd.Flags().StringVar(&agent, "agent", "", "the workload to remove the agent from")
	cmd.Flags().BoolVar(&all, "all", false, "remove detour from the cluster: the webhook and every injected agent")
	return cmd
}
