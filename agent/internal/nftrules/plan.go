package nftrules

import (
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// TableName is the name of detour's tables, one per address family.
const TableName = "detour"

// ChainName is the nat chain that holds the redirect rule.
const ChainName = "prerouting"

// RuleTag is the comment on every rule detour writes.
const RuleTag = "detour: redirect app ports to the agent"

// Options are the inputs of a plan.
type Options struct {
	AppPorts  []uint16 // ports whose inbound connections go to the agent
	AgentPort uint16   // where the agent's redirect listener is
	IPv6      bool     // also program the ip6 family
}

// Plan is the full set of rules for one pod.
type Plan struct {
	Tables []TablePlan
}

// TablePlan is one family's table with its nat prerouting chain.
type TablePlan struct {
	Family nftables.TableFamily
	Rules  []RulePlan
}

// RulePlan redirects TCP to any of Ports to RedirectTo, for traffic that did
// not arrive on loopback (the agent's own dials to the app use loopback and
// must reach the app, never the agent again).
type RulePlan struct {
	Ports      []uint16
	RedirectTo uint16
	Tag        string
}

// NewPlan validates opts and returns the rules to apply.
func NewPlan(opts Options) (Plan, error) {
	if len(opts.AppPorts) == 0 {
		return Plan{}, fmt.Errorf("no app ports to redirect: give at least one with --ports")
	}
	if opts.AgentPort == 0 {
		return Plan{}, fmt.Errorf("agent port is 0: give the agent's redirect port with --agent-port")
	}
	ports := slices.Clone(opts.AppPorts)
	slices.Sort(ports)
	ports = slices.Compact(ports)
	for _, p := range ports {
		if p == 0 {
			return Plan{}, fmt.Errorf("app port 0 is not a port")
		}
		if p == opts.AgentPort {
			return Plan{}, fmt.Errorf("app port %d is the agent's own port: redirecting it would loop", p)
		}
	}
	rule := RulePlan{Ports: ports, RedirectTo: opts.AgentPort, Tag: RuleTag}
	plan := Plan{Tables: []TablePlan{{Family: nftables.TableFamilyIPv4, Rules: []RulePlan{rule}}}}
	if opts.IPv6 {
		plan.Tables = append(plan.Tables, TablePlan{Family: nftables.TableFamilyIPv6, Rules: []RulePlan{rule}})
	}
	return plan, nil
}

// String renders the plan in nft syntax, for --dry-run and for people.
func (p Plan) String() string {
	var b strings.Builder
	for _, t := range p.Tables {
		fmt.Fprintf(&b, "table %s %s {\n", familyName(t.Family), TableName)
		fmt.Fprintf(&b, "\tchain %s {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n", ChainName)
		for _, r := range t.Rules {
			ports := make([]string, len(r.Ports))
			for i, port := range r.Ports {
				ports[i] = fmt.Sprint(port)
			}
			fmt.Fprintf(&b, "\t\tiifname != \"lo\" tcp dport { %s } redirect to :%d comment %q\n", strings.Join(ports, ", "), r.RedirectTo, r.Tag)
		}
		b.WriteString("\t}\n}\n")
	}
	return b.String()
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	}
	return fmt.Sprintf("family(%d)", f)
}

func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n+"\x00")
	return b
}

// portSet is the anonymous constant set a rule looks its ports up in.
func portSet(table *nftables.Table, r RulePlan) (*nftables.Set, []nftables.SetElement) {
	set := &nftables.Set{Table: table, Anonymous: true, Constant: true, KeyType: nftables.TypeInetService}
	elems := make([]nftables.SetElement, len(r.Ports))
	for i, p := range r.Ports {
		elems[i] = nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(p)}
	}
	return set, elems
}

// expressions is the rule's bytecode: iifname != "lo", l4proto tcp, dport
// in the set, redirect to the agent port.
func (r RulePlan) expressions(set *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname("lo")},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(r.RedirectTo)},
		&expr.Redir{RegisterProtoMin: 1},
	}
}

func (r RulePlan) userData() []byte {
	return userdata.AppendString(nil, userdata.TypeComment, r.Tag)
}
