package cli

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/client/internal/kube"
	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/tunnel"
)

// replaceUsage is --replace's help.
const replaceUsage = "stop the app container's own work while you intercept (queue consumers, cron loops): its pods RESTART with the app's command swapped for a sleeper, the agent serving its ports, and restart again with the app on leave, on 'detour quit', or --replace-grace after your workstation goes away; every connection (tcp) comes to you"

// replaceFlags are --replace and --replace-grace.
type replaceFlags struct {
	enabled bool
	grace   time.Duration
}

// checkReplace decides from the flags alone whether --replace can be
// honoured: it takes every connection (a stopped app answers no request
// that an http rule or a mirror would leave to it).
func checkReplace(f replaceFlags, mechanism string, changed func(string) bool) error {
	if !f.enabled {
		if changed("replace-grace") {
			return usagef("--replace-grace is how long pods stay replaced after your workstation goes away: it needs --replace")
		}
		return nil
	}
	if f.grace <= 0 {
		return usagef("--replace-grace %s: want a positive duration, e.g. 1m", f.grace)
	}
	switch {
	case tunnel.IsMirror(mechanism):
		return usagef("--replace stops the app, --mirror copies what the app answers: use one or the other")
	case mechanism != tunnel.MechanismTCP:
		return usagef("--replace stops the app, so every connection must come to you: mechanism %q would leave some to the stopped app (drop --mechanism, --http-* and --preview-url)", mechanism)
	}
	return nil
}

// replaceAndWait replaces the workload's app container (one roll, with the
// agent added when it has none) and waits until every pod runs replaced.
// It returns the replace value for the daemon. On failure the workload
// gets its app back.
func (a *app) replaceAndWait(ctx context.Context, cs kubernetes.Interface, s interceptSettings, t interceptTarget, image string) (string, []corev1.Pod, error) {
	value, reuse, err := kube.ReplaceValue(t.w, client.DefaultUser(), s.replace.grace)
	if err != nil {
		return "", nil, err
	}
	if !reuse {
		fmt.Fprintf(a.errOut, "Replacing the app container of %s (annotation %s): its pods restart with the app stopped…\n", t.w.Ref(), annotations.Replace)
		if err := kube.SetReplace(ctx, cs, t.w, value, image, servedContainer(t.w, t.container)); err != nil {
			return "", nil, err
		}
	}
	pods, err := kube.WaitForReplaced(ctx, cs, t.w, value, s.cfg.Timeouts.Rollout, a.errOut)
	if err == nil {
		err = kube.WaitForEndpoints(ctx, cs, s.ns, t.svc.Name, pods, s.cfg.Timeouts.AgentArrival, a.errOut)
	}
	if err != nil {
		a.giveBack(cs, s.ns, t.w.Ref(), value)
		return "", nil, err
	}
	return value, pods, nil
}

// giveBack removes the replace after a failed intercept, saying so.
func (a *app) giveBack(cs kubernetes.Interface, namespace, ref, value string) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := kube.RemoveReplace(ctx, cs, namespace, ref, value); err != nil {
		fmt.Fprintf(a.errOut, "warning: %s keeps its app stopped: %v (the webhook gives it back after the grace period)\n", ref, err)
		return
	}
	fmt.Fprintf(a.errOut, "Gave %s its app back (its pods restart).\n", ref)
}
