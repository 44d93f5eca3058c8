package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"go.uber.org/zap"
)

// GuardTable is the host nftables table that keeps cluster traffic on the
// veth. It is the second layer of the egress safety; the first is the netns
// having no route out at all.
const GuardTable = "detour_guard"

// ErrGuardDropped means the guard dropped packets: something in or towards
// the cluster tried to leave its namespace.
var ErrGuardDropped = errors.New("egress guard dropped packets")

// ErrGuardMissing means the guard table is absent or not as installed.
var ErrGuardMissing = errors.New("egress guard not installed")

// externalInterfaces lists the host interfaces that carry a default route.
func externalInterfaces(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, fam := range []string{"-4", "-6"} {
		s, err := sh(ctx, "ip", fam, "route", "show", "default")
		if err != nil {
			return nil, fmt.Errorf("list default routes: %w", err)
		}
		for _, line := range strings.Split(s, "\n") {
			f := strings.Fields(line)
			for i := 0; i+1 < len(f); i++ {
				if f[i] == "dev" && !seen[f[i+1]] {
					seen[f[i+1]] = true
					out = append(out, f[i+1])
				}
			}
		}
	}
	if !seen["eth0"] {
		out = append(out, "eth0") // guard the usual name even when it has no route now
	}
	return out, nil
}

// guardRuleset renders the guard. Every drop rule counts; the e2e run
// asserts all counters are zero at the end.
func guardRuleset(ext []string) string {
	q := make([]string, len(ext))
	for i, e := range ext {
		q[i] = fmt.Sprintf("%q", e)
	}
	extSet := "{ " + strings.Join(q, ", ") + " }"
	ranges := "{ " + strings.Join(GuardedRanges, ", ") + " }"
	return fmt.Sprintf(`table inet %[1]s
delete table inet %[1]s
table inet %[1]s {
	chain guard_forward {
		type filter hook forward priority -200; policy accept;
		oifname %[2]s counter log prefix "detour-guard forward: " drop comment "no forwarding out of the machine"
		iifname %[3]q counter log prefix "detour-guard forward: " drop comment "host never forwards cluster traffic"
		oifname %[3]q counter log prefix "detour-guard forward: " drop comment "host never forwards into the cluster"
	}
	chain guard_output {
		type filter hook output priority -200; policy accept;
		ip daddr %[4]s oifname != %[3]q counter log prefix "detour-guard output: " drop comment "cluster ranges only via the veth"
		oifname %[2]s ip saddr %[4]s counter log prefix "detour-guard output: " drop comment "cluster sources never leave"
	}
	chain guard_input {
		type filter hook input priority -200; policy accept;
		iifname %[3]q ct state established,related accept comment "replies to host connections"
		iifname %[3]q icmp type destination-unreachable accept comment "errors about host connections (kube-proxy's reject of a Service without endpoints)"
		iifname %[3]q icmpv6 type destination-unreachable accept comment "errors about host connections (kube-proxy's reject of a Service without endpoints)"
		iifname %[3]q counter log prefix "detour-guard input: " drop comment "cluster cannot open connections to the host"
	}
}
`, GuardTable, extSet, VethHost, ranges)
}

// nftRule is the part of `nft -j` output the guard reads.
type nftRule struct {
	Chain   string                       `json:"chain"`
	Comment string                       `json:"comment"`
	Expr    []map[string]json.RawMessage `json:"expr"`
}

type nftChain struct {
	Name   string `json:"name"`
	Hook   string `json:"hook"`
	Prio   int    `json:"prio"`
	Policy string `json:"policy"`
}

type guardState struct {
	chains map[string]nftChain
	rules  []nftRule
}

func readGuard(ctx context.Context) (*guardState, error) {
	out, err := sh(ctx, "nft", "-j", "list", "table", "inet", GuardTable)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrGuardMissing, err)
	}
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return nil, fmt.Errorf("decode nft json: %w", err)
	}
	g := &guardState{chains: map[string]nftChain{}}
	for _, obj := range doc.Nftables {
		if raw, ok := obj["chain"]; ok {
			var c nftChain
			if err := json.Unmarshal(raw, &c); err != nil {
				return nil, fmt.Errorf("decode chain: %w", err)
			}
			g.chains[c.Name] = c
		}
		if raw, ok := obj["rule"]; ok {
			var r nftRule
			if err := json.Unmarshal(raw, &r); err != nil {
				return nil, fmt.Errorf("decode rule: %w", err)
			}
			g.rules = append(g.rules, r)
		}
	}
	return g, nil
}

// counter returns the packets and bytes of a rule's counter, and whether the
// rule is a counted drop.
func (r nftRule) counter() (packets, bytes uint64, countedDrop bool) {
	var hasCounter, hasDrop bool
	for _, e := range r.Expr {
		if raw, ok := e["counter"]; ok {
			var c struct{ Packets, Bytes uint64 }
			if json.Unmarshal(raw, &c) == nil {
				packets, bytes, hasCounter = c.Packets, c.Bytes, true
			}
		}
		if _, ok := e["drop"]; ok {
			hasDrop = true
		}
	}
	return packets, bytes, hasCounter && hasDrop
}

// VerifyGuard checks that the guard table is installed as guardRuleset
// renders it: three hooks at priority -200 and every counted drop rule.
func VerifyGuard(ctx context.Context) error {
	g, err := readGuard(ctx)
	if err != nil {
		return err
	}
	want := map[string]struct {
		hook  string
		drops int
	}{
		"guard_forward": {"forward", 3},
		"guard_output":  {"output", 2},
		"guard_input":   {"input", 1},
	}
	for name, w := range want {
		c, ok := g.chains[name]
		if !ok || c.Hook != w.hook || c.Prio != -200 || c.Policy != "accept" {
			return fmt.Errorf("%w: chain %s is %+v", ErrGuardMissing, name, c)
		}
		drops := 0
		for _, r := range g.rules {
			if _, _, d := r.counter(); d && r.Chain == name {
				drops++
			}
		}
		if drops != w.drops {
			return fmt.Errorf("%w: chain %s has %d counted drop rules, want %d", ErrGuardMissing, name, drops, w.drops)
		}
	}
	return nil
}

// InstallGuard installs the guard unless a verified one is already there
// (keeping its counters), then verifies it.
func InstallGuard(ctx context.Context, log *zap.Logger) error {
	if err := VerifyGuard(ctx); err == nil {
		log.Info("egress guard already installed and verified", zap.String("table", "inet "+GuardTable))
		return nil
	}
	ext, err := externalInterfaces(ctx)
	if err != nil {
		return err
	}
	if _, err := shIn(ctx, []byte(guardRuleset(ext)), "nft", "-f", "-"); err != nil {
		return fmt.Errorf("install guard: %w", err)
	}
	if err := VerifyGuard(ctx); err != nil {
		return fmt.Errorf("verify guard after install: %w", err)
	}
	log.Info("egress guard installed and verified", zap.String("table", "inet "+GuardTable), zap.Strings("external", ext))
	return nil
}

// GuardDrop is one counted drop rule of the guard.
type GuardDrop struct {
	Chain, Comment string
	Packets, Bytes uint64
}

// GuardCounters reads every counted drop rule of the guard.
func GuardCounters(ctx context.Context) ([]GuardDrop, error) {
	g, err := readGuard(ctx)
	if err != nil {
		return nil, err
	}
	var out []GuardDrop
	for _, r := range g.rules {
		if p, b, d := r.counter(); d {
			out = append(out, GuardDrop{Chain: r.Chain, Comment: r.Comment, Packets: p, Bytes: b})
		}
	}
	return out, nil
}

// CheckGuardCounters prints the counters and returns ErrGuardDropped when any
// drop rule counted a packet.
func CheckGuardCounters(ctx context.Context, w io.Writer) error {
	drops, err := GuardCounters(ctx)
	if err != nil {
		return err
	}
	var bad []string
	for _, d := range drops {
		fmt.Fprintf(w, "guard %-14s %-45q packets=%d bytes=%d\n", d.Chain, d.Comment, d.Packets, d.Bytes)
		if d.Packets != 0 {
			bad = append(bad, fmt.Sprintf("%s %q: %d packets", d.Chain, d.Comment, d.Packets))
		}
	}
	if len(bad) > 0 {
		printDroppedPackets(ctx, w)
		return fmt.Errorf("%w: %s", ErrGuardDropped, strings.Join(bad, "; "))
	}
	return nil
}

// printDroppedPackets prints the kernel's log lines of the guard's drops
// (each drop rule logs the packet with a "detour-guard" prefix): which
// addresses, ports and protocol, so that a count says what it was.
func printDroppedPackets(ctx context.Context, w io.Writer) {
	out, err := sh(ctx, "dmesg")
	if err != nil {
		fmt.Fprintf(w, "guard: the kernel log is not readable (%v): the dropped packets are not shown\n", err)
		return
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "detour-guard ") {
			lines = append(lines, l)
		}
	}
	for _, l := range lines[max(0, len(lines)-20):] {
		fmt.Fprintf(w, "guard dropped: %s\n", l)
	}
}

// RemoveGuard deletes the guard table.
func RemoveGuard(ctx context.Context) error {
	if _, err := readGuard(ctx); err != nil {
		return nil // already gone
	}
	if _, err := sh(ctx, "nft", "delete", "table", "inet", GuardTable); err != nil {
		return fmt.Errorf("remove guard: %w", err)
	}
	return nil
}
