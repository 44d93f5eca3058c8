package cli

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/detour-dev/detour/client/internal/kube"
	"github.com/detour-dev/detour/client/internal/resolve"
)

type runFlags struct {
	workload   string
	agentImage string
	net        clusterNetFlags
}

func (a *app) runCommand() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run --workload W [flags] -- CMD [ARGS...]",
		Short: "Run a command with a workload's view of the cluster, taking no traffic",
		Long: `Run CMD on your workstation as if it ran inside a pod of workload W: it
resolves the cluster's names with the pod's DNS settings (db, db.shop,
db.shop.svc.cluster.local), reaches Services and pods, and its connections
to them leave from the pod itself — NetworkPolicies, a service mesh and
egress rules see W, not your workstation. CMD gets W's app environment too.
Use it for a client, a migration or a test suite "from inside" W.

Everything else CMD dials (the internet, your VPN, services on your
workstation) goes out from your workstation as usual. Connections to
127.0.0.1 stay inside CMD's own namespace: --expose PORT makes a port CMD
listens on reachable at your workstation's 127.0.0.1:PORT.

No root, no sudo: CMD runs in its own unprivileged user, network and mount
namespaces (Linux), with a private /etc/resolv.conf; your workstation's
routes, DNS and firewall do not change. Destinations the agent refuses
(cloud metadata and link-local addresses always; anything outside the
cluster unless the workload's owner allows it with the pod annotation
detour.dev/egress-allow) are reported once each.

If W does not run the detour agent yet, detour adds it (the pods roll once).`,
		Example: `  detour run --workload hello -- psql "$DATABASE_URL"
  detour run -n shop --workload orders -- go test ./integration/...
  detour run --workload hello --expose 2345 -- dlv debug --headless --listen 127.0.0.1:2345 ./cmd/hello`,
		Args: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 0 || len(args) == 0 {
				return fmt.Errorf("detour run needs a command after --, e.g. detour run --workload hello -- curl http://db:5432 (see --help)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.run(cmd.Context(), f, args)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.workload, "workload", "", "the workload whose view of the cluster CMD gets (kind/name picks a kind) (required)")
	fl.StringVar(&f.agentImage, "agent-image", "", "agent image to inject when the workload has none (default from config images.agentImage, else the webhook's)")
	addClusterNetFlags(fl, &f.net, false)
	_ = cmd.MarkFlagRequired("workload")
	return cmd
}

func (a *app) shellCommand() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "shell --workload W [flags]",
		Short: "Start your shell with a workload's view of the cluster",
		Long: `detour shell is detour run -- $SHELL: an interactive shell (or an IDE
started from it) whose programs see the cluster as a pod of W does. See
'detour run --help'. Leave with exit.`,
		Example: `  detour shell --workload hello
  detour shell -n shop --workload orders --expose 3000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			sh := os.Getenv("SHELL")
			if sh == "" {
				sh = "/bin/sh"
			}
			return a.run(cmd.Context(), f, []string{sh})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.workload, "workload", "", "the workload whose view of the cluster the shell gets (required)")
	fl.StringVar(&f.agentImage, "agent-image", "", "agent image to inject when the workload has none")
	addClusterNetFlags(fl, &f.net, false)
	_ = cmd.MarkFlagRequired("workload")
	return cmd
}

func (a *app) run(ctx context.Context, f runFlags, command []string) error {
	if _, _, err := f.net.parse(); err != nil {
		return usage(err) // before the cluster is asked anything
	}
	cfg, err := a.config()
	if err != nil {
		return err
	}
	ns, _, err := a.namespace()
	if err != nil {
		return err
	}
	rc, cs, err := a.clients(ctx)
	if err != nil {
		return err
	}
	cands, err := kube.Candidates(ctx, cs, ns)
	if err != nil {
		return err
	}
	w, err := resolve.FindWorkload(f.workload, ns, cands)
	if err != nil {
		return err
	}
	image := f.agentImage
	if image == "" {
		image = cfg.Images.AgentImage
	}
	if _, err := a.injectAndWait(ctx, cs, w, image, "", cfg.Timeouts.Rollout); err != nil {
		return err
	}
	c := clusterNet{rc: rc, cs: cs, workload: w, command: command, flags: f.net}
	code, err := a.runInClusterNetwork(ctx, c)
	if err != nil {
		return err
	}
	if code != 0 {
		return ExitCode(code)
	}
	return nil
}
