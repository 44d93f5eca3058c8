// Package nftrules plans and applies the nftables rules of redirect mode:
// in the pod's network namespace, TCP connections arriving for the app's
// ports are redirected to the agent's port.
//
// Planning is pure (NewPlan, Plan.String, Plan.expressions) and unit-tested
// without a kernel; Apply sends the whole plan in one netlink batch, which
// the kernel applies atomically. Everything lives in detour's own tables,
// flushed and rebuilt on each apply, so re-running init never duplicates a
// rule and never touches rules that belong to anyone else.
package nftrules
