package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/detour-dev/detour/client/install"
)

func (a *app) installCommand() *cobra.Command {
	var opts install.Options
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install the detour webhook into the cluster (namespace detour-system)",
		Long: `Applies detour's manifests (namespace detour-system, RBAC, the webhook
Deployment and Service, the MutatingWebhookConfiguration) with server-side
apply, then waits for the webhook to be ready. Running it again updates them.
Workloads get the agent when they opt in; detour intercept does that for you.

With --agent-max-idle, agents that have had no session (no intercept, no
detour run) for that long ask to be removed: the webhook then drops
detour.dev/inject from their workload, which rolls it without the agent
(the next intercept adds it back). It needs rights of its own to watch the
labelled pods and patch workloads, which this applies too; without the
option it is off and those rights are deleted.`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, cs, err := a.clients(cmd.Context())
			if err != nil {
				return err
			}
			if opts.Image == "" {
				cfg, err := a.config()
				if err != nil {
					return err
				}
				opts.Image = cfg.Images.AgentImage
			}
			if opts.AgentMaxIdle < 0 {
				return usage(fmt.Errorf("--agent-max-idle %s: want a positive duration (e.g. 1h), or 0 for off", opts.AgentMaxIdle))
			}
			opts.Progress = a.errOut
			sum, err := install.Install(cmd.Context(), cs, opts)
			if err != nil {
				return err
			}
			fmt.Fprintln(a.out, sum)
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&opts.ClusterCIDRs, "cluster-cidrs", nil, "the pod and Service ranges agents dial for local processes (detour run, intercept -- CMD), comma-separated (default: detected from ServiceCIDRs and the nodes' podCIDRs)")
	cmd.Flags().StringVar(&opts.Image, "image", "", "the detour image (webhook and agents) to install (default from config images.agentImage, else "+install.DefaultImage+")")
	cmd.Flags().DurationVar(&opts.AgentMaxIdle, "agent-max-idle", 0, "remove the agent from workloads whose agents had no session for this long, e.g. 8h (0: never)")
	cmd.Flags().DurationVar(&opts.Timeout, "timeout", 3*time.Minute, "how long to wait for the webhook to be ready")
	return cmd
}

func (a *app) uninstallAll(cmd *cobra.Command) error {
	_, cs, err := a.clients(cmd.Context())
	if err != nil {
		return err
	}
	sum, err := install.Uninstall(cmd.Context(), cs, install.UninstallOptions{Progress: a.errOut})
	if err != nil {
		return err
	}
	fmt.Fprintln(a.out, sum)
	return nil
}
