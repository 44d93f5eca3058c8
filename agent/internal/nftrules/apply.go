package nftrules

import (
	"fmt"

	"github.com/google/nftables"
)

// Batch is the part of *nftables.Conn that Apply uses; the kernel sees
// nothing until Flush, which sends the batch as one transaction.
type Batch interface {
	AddTable(*nftables.Table) *nftables.Table
	FlushTable(*nftables.Table)
	AddChain(*nftables.Chain) *nftables.Chain
	AddSet(*nftables.Set, []nftables.SetElement) error
	AddRule(*nftables.Rule) *nftables.Rule
	Flush() error
}

// Apply writes the plan in one atomic transaction. Each table is created if
// missing and flushed, then rebuilt, so applying twice leaves exactly one
// copy of every rule, and a failure leaves the previous rules in place.
func Apply(p Plan, b Batch) error {
	for _, tp := range p.Tables {
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
			set, elems := portSet(table, r)
			if err := b.AddSet(set, elems); err != nil {
				return fmt.Errorf("plan port set for table %s %s: %w", familyName(tp.Family), TableName, err)
			}
			b.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: r.expressions(set), UserData: r.userData()})
		}
	}
	if err := b.Flush(); err != nil {
		return fmt.Errorf("apply nftables rules (needs CAP_NET_ADMIN in the pod's network namespace): %w", err)
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
