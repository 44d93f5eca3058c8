package nftrules

import (
	"fmt"

	"github.com/google/nftables"
)

// Batch is the part of *nftables.Conn that Apply uses; the kernel sees
// nothing until Flush, which sends what was queued as one transaction.
type Batch interface {
	AddTable(*nftables.Table) *nftables.Table
	FlushTable(*nftables.Table)
	AddChain(*nftables.Chain) *nftables.Chain
	AddSet(*nftables.Set, []nftables.SetElement) error
	AddRule(*nftables.Rule) *nftables.Rule
	Flush() error
}

// Skipped is a best-effort table the kernel refused, and why.
type Skipped struct {
	Family nftables.TableFamily
	Err    error
}

func (s Skipped) String() string {
	return fmt.Sprintf("table %s %s not applied (best-effort): %v", familyName(s.Family), TableName, s.Err)
}

// Apply writes the plan one table at a time, each in its own atomic
// transaction: the ip table first, then ip6, so a kernel without IPv6 NAT
// cannot take the ip rules down with it. Each table is created if missing
// and flushed, then rebuilt, so applying twice leaves exactly one copy of
// every rule, and a failure leaves that table's previous rules in place.
// A required table's failure is returned; a best-effort one's is reported
// in the skipped list.
func Apply(p Plan, b Batch) ([]Skipped, error) {
	var skipped []Skipped
	for _, tp := range p.Tables {
		err := applyTable(tp, b)
		switch {
		case err == nil:
		case tp.Required:
			return skipped, err
		default:
			skipped = append(skipped, Skipped{Family: tp.Family, Err: err})
		}
	}
	return skipped, nil
}

func applyTable(tp TablePlan, b Batch) error {
	table := b.AddTable(&nftables.Table{Family: tp.Family, Name: TableName})
	b.FlushTable(table)
	chain := b.AddChain(&nftables.Chain{
		Name:     ChainName,
		Table:    table,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPrerouting,
		Priority: nftables.ChainPriorityNATDest,
	})
	for _, r := range tp.Rules {
		set, elems := r.portSet(table)
		if set != nil {
			if err := b.AddSet(set, elems); err != nil {
				return fmt.Errorf("plan port set for table %s %s: %w", familyName(tp.Family), TableName, err)
			}
		}
		b.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: r.expressions(set), UserData: r.userData()})
	}
	if err := b.Flush(); err != nil {
		return fmt.Errorf("apply nftables table %s %s (needs CAP_NET_ADMIN in the pod's network namespace, and the node's %s NAT support): %w",
			familyName(tp.Family), TableName, familyName(tp.Family), err)
	}
	return nil
}

// Remove deletes detour's tables; a missing table is not an error.
func Remove(conn *nftables.Conn, ipv6 bool) error {
	families := []nftables.TableFamily{nftables.TableFamilyIPv4}
	if ipv6 {
		families = append(families, nftables.TableFamilyIPv6)
	}
	tables, err := conn.ListTables()
	if err != nil {
		return fmt.Errorf("list nftables tables: %w", err)
	}
	for _, t := range tables {
		for _, f := range families {
			if t.Name == TableName && t.Family == f {
				conn.DelTable(t)
			}
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("remove detour nftables tables: %w", err)
	}
	return nil
}
