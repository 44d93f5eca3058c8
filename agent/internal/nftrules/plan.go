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

// ChainName is the nat chain that holds the redirect rules.
const ChainName = "prerouting"

// RuleTag is the comment on the rule that sends app ports to the agent.
const RuleTag = "detour: redirect app ports to the agent"

// ProbeTag is the comment on a rule that sends a probe port to its app port.
const ProbeTag = "detour: probes reach the app"

// ProbePort is a port the webhook pointed the kubelet's probes at instead
// of the app port: its connections go straight to AppPort, past the agent,
// so a probe never depends on an intercept.
type ProbePort struct {
	Port    uint16 // what the rewritten probe dials
	AppPort uint16 // the app port it stands for
}

// Options are the inputs of a plan.
type Options struct {
	AppPorts   []uint16    // ports whose inbound connections go to the agent
	AgentPort  uint16      // where the agent's redirect listener is
	ProbePorts []ProbePort // ports redirected to their app port, past the agent
	IPv6       bool        // also program the ip6 family
	// IPv6Required: the pod has an IPv6 address, so failing to program ip6
	// is an error. Otherwise ip6 is best-effort: a node without IPv6 NAT
	// must not keep an IPv4-only pod in Init.
	IPv6Required bool
}

// Plan is the full set of rules for one pod.
type Plan struct {
	Tables []TablePlan
}

// TablePlan is one family's table with its nat prerouting chain. Each table
// is applied in its own transaction.
type TablePlan struct {
	Family nftables.TableFamily
	// Required: a failure to apply this table fails init. A table that is
	// not required is skipped with a warning when the kernel refuses it.
	Required bool
	Rules    []RulePlan
}

// RulePlan is one rule as data: its statements in order. The nft text of
// --dry-run and the netlink bytecode are both rendered from Stmts.
type RulePlan struct {
	Stmts []Stmt
	Tag   string
}

// Stmt is one match or action of a rule.
type Stmt interface {
	// Text is the statement in nft syntax.
	Text() string
	// exprs is its bytecode; set is the rule's port set, when it has one.
	exprs(set *nftables.Set) []expr.Any
}

// IIFNameNot matches packets that did not arrive on the named interface.
type IIFNameNot struct{ Name string }

// TCPDportIn matches TCP to any of Ports (an anonymous constant set).
type TCPDportIn struct{ Ports []uint16 }

// RedirectTo redirects to Port on the address the packet arrived for.
type RedirectTo struct{ Port uint16 }

func (s IIFNameNot) Text() string { return fmt.Sprintf("iifname != %q", s.Name) }

func (s IIFNameNot) exprs(*nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(s.Name)},
	}
}

func (s TCPDportIn) Text() string {
	ports := make([]string, len(s.Ports))
	for i, p := range s.Ports {
		ports[i] = fmt.Sprint(p)
	}
	return fmt.Sprintf("tcp dport { %s }", strings.Join(ports, ", "))
}

func (s TCPDportIn) exprs(set *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
	}
}

func (s RedirectTo) Text() string { return fmt.Sprintf("redirect to :%d", s.Port) }

func (s RedirectTo) exprs(*nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(s.Port)},
		&expr.Redir{RegisterProtoMin: 1},
	}
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
	var rules []RulePlan
	seen := map[uint16]bool{}
	for _, pp := range opts.ProbePorts {
		switch {
		case pp.Port == 0 || pp.AppPort == 0:
			return Plan{}, fmt.Errorf("probe port %d:%d: both ports must be set", pp.Port, pp.AppPort)
		case !slices.Contains(ports, pp.AppPort):
			return Plan{}, fmt.Errorf("probe port %d stands for %d, which is not one of the app ports", pp.Port, pp.AppPort)
		case slices.Contains(ports, pp.Port) || pp.Port == opts.AgentPort:
			return Plan{}, fmt.Errorf("probe port %d is an app port or the agent's port", pp.Port)
		case seen[pp.Port]:
			return Plan{}, fmt.Errorf("probe port %d given twice", pp.Port)
		}
		seen[pp.Port] = true
		rules = append(rules, RulePlan{Tag: ProbeTag, Stmts: []Stmt{
			IIFNameNot{"lo"}, TCPDportIn{[]uint16{pp.Port}}, RedirectTo{pp.AppPort},
		}})
	}
	rules = append(rules, RulePlan{Tag: RuleTag, Stmts: []Stmt{
		IIFNameNot{"lo"}, TCPDportIn{ports}, RedirectTo{opts.AgentPort},
	}})
	plan := Plan{Tables: []TablePlan{{Family: nftables.TableFamilyIPv4, Required: true, Rules: rules}}}
	if opts.IPv6 {
		plan.Tables = append(plan.Tables, TablePlan{Family: nftables.TableFamilyIPv6, Required: opts.IPv6Required, Rules: rules})
	}
	return plan, nil
}

// String renders the plan in nft syntax, for --dry-run and for people.
func (p Plan) String() string {
	var b strings.Builder
	for _, t := range p.Tables {
		if !t.Required {
			b.WriteString("# best-effort: skipped with a warning if the kernel refuses it\n")
		}
		fmt.Fprintf(&b, "table %s %s {\n", familyName(t.Family), TableName)
		fmt.Fprintf(&b, "\tchain %s {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n", ChainName)
		for _, r := range t.Rules {
			fmt.Fprintf(&b, "\t\t%s\n", r.Text())
		}
		b.WriteString("\t}\n}\n")
	}
	return b.String()
}

// Text is the rule in nft syntax.
func (r RulePlan) Text() string {
	parts := make([]string, 0, len(r.Stmts)+1)
	for _, s := range r.Stmts {
		parts = append(parts, s.Text())
	}
	return strings.Join(parts, " ") + fmt.Sprintf(" comment %q", r.Tag)
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

// ifname is an interface name as the kernel compares it: NUL-padded to
// IFNAMSIZ, as nft itself sends it.
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n+"\x00")
	return b
}

// portSet is the anonymous constant set of the rule's TCPDportIn, nil when
// it has none.
func (r RulePlan) portSet(table *nftables.Table) (*nftables.Set, []nftables.SetElement) {
	for _, s := range r.Stmts {
		d, ok := s.(TCPDportIn)
		if !ok {
			continue
		}
		set := &nftables.Set{Table: table, Anonymous: true, Constant: true, KeyType: nftables.TypeInetService}
		elems := make([]nftables.SetElement, len(d.Ports))
		for i, p := range d.Ports {
			elems[i] = nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(p)}
		}
		return set, elems
	}
	return nil, nil
}

// expressions is the rule's bytecode, its statements' in order.
func (r RulePlan) expressions(set *nftables.Set) []expr.Any {
	var out []expr.Any
	for _, s := range r.Stmts {
		out = append(out, s.exprs(set)...)
	}
	return out
}

func (r RulePlan) userData() []byte {
	return userdata.AppendString(nil, userdata.TypeComment, r.Tag)
}
