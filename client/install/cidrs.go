package install

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// DetectClusterCIDRs reads the cluster's Service ranges (ServiceCIDR
// objects) and pod ranges (each node's podCIDRs). The agents dial these
// for a local process by default (detour run, intercept -- CMD); anything
// else needs the workload's detour.dev/egress-allow annotation. What the
// installer may not read is left out and said in notes.
func DetectClusterCIDRs(ctx context.Context, c kubernetes.Interface) (cidrs, notes []string, err error) {
	svc, err := c.NetworkingV1().ServiceCIDRs().List(ctx, metav1.ListOptions{})
	switch {
	case err == nil:
		for _, s := range svc.Items {
			cidrs = append(cidrs, s.Spec.CIDRs...)
		}
	case apierrors.IsForbidden(err), apierrors.IsNotFound(err):
		notes = append(notes, fmt.Sprintf("cannot list servicecidrs (%v): give the Service range with --cluster-cidrs", err))
	default:
		return nil, nil, fmt.Errorf("list servicecidrs: %w", err)
	}
	nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	switch {
	case err == nil:
		for _, n := range nodes.Items {
			cidrs = append(cidrs, n.Spec.PodCIDRs...)
		}
	case apierrors.IsForbidden(err):
		notes = append(notes, fmt.Sprintf("cannot list nodes (%v): give the pod range with --cluster-cidrs", err))
	default:
		return nil, nil, fmt.Errorf("list nodes: %w", err)
	}
	return normalizeCIDRs(cidrs), notes, nil
}

// normalizeCIDRs masks, sorts and de-duplicates, dropping what does not parse.
func normalizeCIDRs(in []string) []string {
	var out []string
	for _, s := range in {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			continue
		}
		out = append(out, p.Masked().String())
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// ValidateCIDRs checks --cluster-cidrs.
func ValidateCIDRs(cidrs []string) error {
	for _, s := range cidrs {
		if _, err := netip.ParsePrefix(s); err != nil {
			return fmt.Errorf("--cluster-cidrs %q is not a CIDR (e.g. 10.96.0.0/12): %w", s, err)
		}
	}
	return nil
}
