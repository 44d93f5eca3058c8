package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/detour-dev/detour/client/internal/kube"
	"github.com/detour-dev/detour/client/internal/resolve"
)

func (a *app) uninstallCommand() *cobra.Command {
	var agent string
	cmd := &cobra.Command{
		Use:   "uninstall --agent WORKLOAD",
		Short: "Remove the detour agent from a workload",
		Long:  "Removes the detour.dev/inject annotation from the workload's pod template; its pods roll without the agent.",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			if agent == "" {
				return fmt.Errorf("say what to uninstall: --agent WORKLOAD")
			}
			ctx := cmd.Context()
			ns, _, err := a.namespace()
			if err != nil {
				return err
			}
			_, cs, err := a.clients(ctx)
			if err != nil {
				return err
			}
			cands, err := kube.Candidates(ctx, cs, ns)
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
	return cmd
}
