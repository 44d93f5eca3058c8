package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.uber.org/zap"
)

// ErrUnsafe means a safety precheck failed; no component is started.
var ErrUnsafe = errors.New("cluster network is not sealed")

func linkExists(ctx context.Context, netns bool, name string) bool {
	var err error
	if netns {
		_, err = sh(ctx, "ip", "-n", NetnsName, "link", "show", "dev", name)
	} else {
		_, err = sh(ctx, "ip", "link", "show", "dev", name)
	}
	return err == nil
}

// SetupNetwork creates the netns, its addresses, the veth pair and the routes,
// in that order. It must only run once the guard is verified. Idempotent.
func SetupNetwork(ctx context.Context, log *zap.Logger) error {
	if err := VerifyGuard(ctx); err != nil {
		return fmt.Errorf("refusing to create the network: %w", err)
	}
	if _, err := os.Stat(NetnsPath); err != nil {
		if _, err := sh(ctx, "ip", "netns", "add", NetnsName); err != nil {
			return fmt.Errorf("create netns: %w", err)
		}
		log.Info("created network namespace", zap.String("netns", NetnsName))
	}
	steps := [][]string{
		// No IPv6 inside: nothing to leak, no router solicitations towards the host.
		{"nsenter", "--net=" + NetnsPath, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"},
		{"nsenter", "--net=" + NetnsPath, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"ip", "-n", NetnsName, "link", "set", "lo", "up"},
		{"ip", "-n", NetnsName, "addr", "replace", NodeIP + "/32", "dev", "lo"},
	}
	if !linkExists(ctx, false, VethHost) {
		steps = append(steps, []string{"ip", "link", "add", VethHost, "type", "veth", "peer", "name", VethNS, "netns", NetnsName})
	}
	steps = append(steps,
		[]string{"sysctl", "-qw", "net.ipv6.conf." + VethHost + ".disable_ipv6=1"},
		[]string{"ip", "addr", "replace", fmt.Sprintf("%s/%d", VethHostIP, VethPrefix), "dev", VethHost},
		[]string{"ip", "-n", NetnsName, "addr", "replace", fmt.Sprintf("%s/%d", VethNSIP, VethPrefix), "dev", VethNS},
		[]string{"ip", "link", "set", VethHost, "up"},
		[]string{"ip", "-n", NetnsName, "link", "set", VethNS, "up"},
	)
	if !linkExists(ctx, true, SinkLink) {
		steps = append(steps, []string{"ip", "-n", NetnsName, "link", "add", SinkLink, "type", "bridge"})
	}
	steps = append(steps,
		[]string{"ip", "-n", NetnsName, "link", "set", SinkLink, "up"},
		// The service range goes into a port-less bridge: connect() to a
		// ClusterIP gets a route (so kube-proxy's DNAT can run) but no
		// packet that misses the DNAT goes anywhere.
		[]string{"ip", "-n", NetnsName, "route", "replace", ServiceCIDR, "dev", SinkLink, "src", NodeIP},
	)
	for _, r := range HostRoutes {
		steps = append(steps, []string{"ip", "route", "replace", r, "via", VethNSIP, "dev", VethHost})
	}
	for _, s := range steps {
		if _, err := sh(ctx, s[0], s[1:]...); err != nil {
			return fmt.Errorf("set up network: %w", err)
		}
	}
	log.Info("network ready", zap.String("netns", NetnsName), zap.String("veth", VethHost+"<->"+VethNS),
		zap.String("nodeIP", NodeIP), zap.String("pods", PodCIDR), zap.String("services", ServiceCIDR))
	return nil
}

// Precheck verifies, before any component starts, that the cluster cannot
// reach outside the machine: guard present, netns present, no default route
// and no external link in the netns, route lookups to external addresses
// fail inside it, and the host routes the cluster ranges via the veth.
func Precheck(ctx context.Context) error {
	if err := VerifyGuard(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrUnsafe, err)
	}
	if _, err := os.Stat(NetnsPath); err != nil {
		return fmt.Errorf("%w: netns %s missing: %w", ErrUnsafe, NetnsName, err)
	}
	for _, fam := range []string{"-4", "-6"} {
		out, err := sh(ctx, "ip", fam, "-n", NetnsName, "route", "show", "default")
		if err != nil {
			return fmt.Errorf("%w: list netns routes: %w", ErrUnsafe, err)
		}
		if out != "" {
			return fmt.Errorf("%w: netns has a default route: %s", ErrUnsafe, out)
		}
	}
	ext, err := externalInterfaces(ctx)
	if err != nil {
		return err
	}
	links, err := sh(ctx, "ip", "-n", NetnsName, "-o", "link", "show")
	if err != nil {
		return fmt.Errorf("%w: list netns links: %w", ErrUnsafe, err)
	}
	for _, line := range strings.Split(links, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		for _, e := range ext {
			if name == e {
				return fmt.Errorf("%w: external link %s is inside the netns", ErrUnsafe, name)
			}
		}
	}
	for _, probe := range []string{ExternalProbe, "8.8.8.8"} {
		// A route lookup sends nothing; it must fail for lack of a route.
		if out, err := sh(ctx, "ip", "-n", NetnsName, "route", "get", probe); err == nil {
			return fmt.Errorf("%w: netns has a route to %s: %s", ErrUnsafe, probe, out)
		}
	}
	for _, r := range HostRoutes {
		addr := strings.Split(r, "/")[0]
		out, err := sh(ctx, "ip", "route", "get", addr)
		if err != nil || !strings.Contains(out, "dev "+VethHost) {
			return fmt.Errorf("%w: host route to %s is not via %s: %s %v", ErrUnsafe, r, VethHost, out, err)
		}
	}
	return nil
}

// TeardownNetwork removes the host routes, the veth and the netns.
func TeardownNetwork(ctx context.Context, log *zap.Logger) error {
	var errs []error
	for _, r := range HostRoutes {
		if out, _ := sh(ctx, "ip", "route", "show", r); out != "" {
			if _, err := sh(ctx, "ip", "route", "del", r); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if linkExists(ctx, false, VethHost) {
		if _, err := sh(ctx, "ip", "link", "del", VethHost); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := os.Stat(NetnsPath); err == nil {
		if _, err := sh(ctx, "ip", "netns", "del", NetnsName); err != nil {
			errs = append(errs, err)
		} else {
			log.Info("removed network namespace", zap.String("netns", NetnsName))
		}
	}
	return errors.Join(errs...)
}
