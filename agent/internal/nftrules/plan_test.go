package nftrules

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

func TestNewPlan(t *testing.T) {
	p, err := NewPlan(Options{AppPorts: []uint16{8443, 8080, 8080}, AgentPort: 15001, IPv6: true,
		ProbePorts: []ProbePort{{Port: 15100, AppPort: 8080}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Tables) != 2 || p.Tables[0].Family != nftables.TableFamilyIPv4 || p.Tables[1].Family != nftables.TableFamilyIPv6 {
		t.Fatalf("tables = %+v", p.Tables)
	}
	if !p.Tables[0].Required || p.Tables[1].Required {
		t.Fatalf("required = %v, %v; want ip required, ip6 best-effort (the pod has no IPv6 address)", p.Tables[0].Required, p.Tables[1].Required)
	}
	want := `table ip detour {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname != "lo" tcp dport { 15100 } redirect to :8080 comment "detour: probes reach the app"
		iifname != "lo" tcp dport { 8080, 8443 } redirect to :15001 comment "detour: redirect app ports to the agent"
	}
}
# best-effort: skipped with a warning if the kernel refuses it
table ip6 detour {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname != "lo" tcp dport { 15100 } redirect to :8080 comment "detour: probes reach the app"
		iifname != "lo" tcp dport { 8080, 8443 } redirect to :15001 comment "detour: redirect app ports to the agent"
	}
}
`
	if got := p.String(); got != want {
		t.Fatalf("rendered plan:\n%s\nwant:\n%s", got, want)
	}
	p, _ = NewPlan(Options{AppPorts: []uint16{8080}, AgentPort: 15001, IPv6: true, IPv6Required: true})
	if !p.Tables[1].Required || strings.Contains(p.String(), "best-effort") {
		t.Fatalf("a pod with an IPv6 address: ip6 must be required:\n%s", p)
	}
	p, _ = NewPlan(Options{AppPorts: []uint16{8080}, AgentPort: 15001})
	if len(p.Tables) != 1 {
		t.Fatalf("without IPv6: %d tables, want 1", len(p.Tables))
	}
}

func TestNewPlanRejects(t *testing.T) {
	cases := map[string]Options{
		"no ports":                {AgentPort: 15001},
		"no agent port":           {AppPorts: []uint16{80}},
		"port zero":               {AppPorts: []uint16{0}, AgentPort: 15001},
		"loop on itself":          {AppPorts: []uint16{80, 15001}, AgentPort: 15001},
		"probe for no app port":   {AppPorts: []uint16{80}, AgentPort: 15001, ProbePorts: []ProbePort{{15100, 81}}},
		"probe port is app port":  {AppPorts: []uint16{80, 81}, AgentPort: 15001, ProbePorts: []ProbePort{{81, 80}}},
		"probe port is agent's":   {AppPorts: []uint16{80}, AgentPort: 15001, ProbePorts: []ProbePort{{15001, 80}}},
		"probe port twice":        {AppPorts: []uint16{80, 81}, AgentPort: 15001, ProbePorts: []ProbePort{{15100, 80}, {15100, 81}}},
		"probe port zero":         {AppPorts: []uint16{80}, AgentPort: 15001, ProbePorts: []ProbePort{{0, 80}}},
		"probe app port zero":     {AppPorts: []uint16{80}, AgentPort: 15001, ProbePorts: []ProbePort{{15100, 0}}},
		"probe both ports unset":  {AppPorts: []uint16{80}, AgentPort: 15001, ProbePorts: []ProbePort{{}}},
		"agent port in app ports": {AppPorts: []uint16{15001}, AgentPort: 15001},
	}
	for name, opts := range cases {
		if _, err := NewPlan(opts); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// recordingBatch is a Batch that records calls instead of talking to a
// kernel. failFlush[i] is the error of the i-th Flush.
type recordingBatch struct {
	calls     []string
	rules     []*nftables.Rule
	sets      []*nftables.Set
	elems     [][]nftables.SetElement
	flushes   int
	failFlush map[int]error
}

func (b *recordingBatch) AddTable(t *nftables.Table) *nftables.Table {
	b.calls = append(b.calls, "add table "+familyName(t.Family)+" "+t.Name)
	return t
}
func (b *recordingBatch) FlushTable(t *nftables.Table) {
	b.calls = append(b.calls, "flush table "+familyName(t.Family)+" "+t.Name)
}
func (b *recordingBatch) AddChain(c *nftables.Chain) *nftables.Chain {
	b.calls = append(b.calls, "add chain "+c.Name)
	return c
}
func (b *recordingBatch) AddSet(s *nftables.Set, e []nftables.SetElement) error {
	// As nftables.Conn does for an anonymous set.
	s.Name, s.ID = "__set%d", uint32(len(b.sets)+1)
	b.sets, b.elems = append(b.sets, s), append(b.elems, e)
	b.calls = append(b.calls, "add set")
	return nil
}
func (b *recordingBatch) AddRule(r *nftables.Rule) *nftables.Rule {
	b.calls = append(b.calls, "add rule")
	b.rules = append(b.rules, r)
	return r
}
func (b *recordingBatch) Flush() error {
	err := b.failFlush[b.flushes]
	b.flushes++
	b.calls = append(b.calls, "commit")
	return err
}

// TestApplyBytecode pins every expression of both rules, byte for byte, as
// nft itself would send `iifname != "lo" tcp dport { … } redirect to :P`.
func TestApplyBytecode(t *testing.T) {
	p, err := NewPlan(Options{AppPorts: []uint16{8443, 8080}, AgentPort: 15001, ProbePorts: []ProbePort{{Port: 15100, AppPort: 8443}}})
	if err != nil {
		t.Fatal(err)
	}
	var b recordingBatch
	if _, err := Apply(p, &b); err != nil {
		t.Fatal(err)
	}
	if len(b.rules) != 2 || len(b.sets) != 2 {
		t.Fatalf("%d rules, %d sets; want 2 and 2", len(b.rules), len(b.sets))
	}
	lo := []byte{'l', 'o', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} // IFNAMSIZ, NUL-padded
	rule := func(set *nftables.Set, port []byte) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: lo},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
			&expr.Immediate{Register: 1, Data: port},
			&expr.Redir{RegisterProtoMin: 1},
		}
	}
	for i, c := range []struct {
		exprs []expr.Any
		keys  [][]byte
		tag   string
	}{
		{rule(b.sets[0], []byte{0x20, 0xfb}), [][]byte{{0x3a, 0xfc}}, ProbeTag},              // 15100 → 8443
		{rule(b.sets[1], []byte{0x3a, 0x99}), [][]byte{{0x1f, 0x90}, {0x20, 0xfb}}, RuleTag}, // 8080, 8443 → 15001
	} {
		r := b.rules[i]
		if !reflect.DeepEqual(r.Exprs, c.exprs) {
			t.Errorf("rule %d bytecode:\n got %s\nwant %s", i, dump(r.Exprs), dump(c.exprs))
		}
		var keys [][]byte
		for _, e := range b.elems[i] {
			keys = append(keys, e.Key)
		}
		if !reflect.DeepEqual(keys, c.keys) {
			t.Errorf("rule %d set keys %v, want %v", i, keys, c.keys)
		}
		s := b.sets[i]
		if !s.Anonymous || !s.Constant || s.KeyType != nftables.TypeInetService || s.Table.Family != nftables.TableFamilyIPv4 {
			t.Errorf("rule %d set %+v: want an anonymous constant inet_service set in the ip table", i, s)
		}
		if tag, ok := userdata.GetString(r.UserData, userdata.TypeComment); !ok || tag != c.tag {
			t.Errorf("rule %d comment %q, want %q", i, tag, c.tag)
		}
		ch := r.Chain
		if ch.Type != nftables.ChainTypeNAT || *ch.Hooknum != *nftables.ChainHookPrerouting || *ch.Priority != *nftables.ChainPriorityNATDest || ch.Name != ChainName {
			t.Errorf("rule %d not in the nat prerouting dstnat chain: %+v", i, ch)
		}
	}
}

// TestStmtTextAndBytecodeAgree: each statement kind renders the text nft
// prints for the bytecode it emits, so --dry-run shows what is applied.
func TestStmtTextAndBytecodeAgree(t *testing.T) {
	set := &nftables.Set{Name: "__set0"}
	for _, c := range []struct {
		s     Stmt
		text  string
		first expr.Any
	}{
		{IIFNameNot{"lo"}, `iifname != "lo"`, &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}},
		{TCPDportIn{[]uint16{80, 443}}, "tcp dport { 80, 443 }", &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}},
		{RedirectTo{15001}, "redirect to :15001", &expr.Immediate{Register: 1, Data: []byte{0x3a, 0x99}}},
	} {
		if got := c.s.Text(); got != c.text {
			t.Errorf("%T text %q, want %q", c.s, got, c.text)
		}
		if got := c.s.exprs(set)[0]; !reflect.DeepEqual(got, c.first) {
			t.Errorf("%T first expression %s, want %s", c.s, dump([]expr.Any{got}), dump([]expr.Any{c.first}))
		}
	}
}

func dump(es []expr.Any) string {
	var parts []string
	for _, e := range es {
		parts = append(parts, strings.TrimPrefix(strings.ReplaceAll(fmtAny(e), "\n", " "), "&"))
	}
	return "[" + strings.Join(parts, "; ") + "]"
}

func fmtAny(e expr.Any) string { return fmt.Sprintf("%#v", e) }

func TestApplyTablesAreSeparateTransactions(t *testing.T) {
	p, _ := NewPlan(Options{AppPorts: []uint16{8080}, AgentPort: 15001, IPv6: true})
	var b recordingBatch
	if _, err := Apply(p, &b); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"add table ip detour", "flush table ip detour", "add chain prerouting", "add set", "add rule", "commit",
		"add table ip6 detour", "flush table ip6 detour", "add chain prerouting", "add set", "add rule", "commit",
	}
	if strings.Join(b.calls, "; ") != strings.Join(want, "; ") {
		t.Fatalf("calls = %q\nwant %q", b.calls, want)
	}
}

// TestApplyIPv6BestEffort: a node without IPv6 NAT refuses the ip6 table.
// An IPv4-only pod must still get its ip rules and init must succeed (it
// stayed in Init when both families were one transaction); a pod with an
// IPv6 address must fail, or its IPv6 traffic would bypass the agent.
func TestApplyIPv6BestEffort(t *testing.T) {
	noNAT := errors.New("netlink receive: operation not supported")
	p, _ := NewPlan(Options{AppPorts: []uint16{8080}, AgentPort: 15001, IPv6: true})
	b := recordingBatch{failFlush: map[int]error{1: noNAT}}
	skipped, err := Apply(p, &b)
	if err != nil {
		t.Fatalf("IPv4-only pod, no IPv6 NAT: %v", err)
	}
	if b.flushes != 2 || len(skipped) != 1 || skipped[0].Family != nftables.TableFamilyIPv6 || !errors.Is(skipped[0].Err, noNAT) {
		t.Fatalf("flushes %d, skipped %v; want 2 commits and ip6 skipped with the kernel's error", b.flushes, skipped)
	}
	if !strings.Contains(skipped[0].String(), "ip6 detour") {
		t.Errorf("warning %q does not name the table", skipped[0])
	}

	p, _ = NewPlan(Options{AppPorts: []uint16{8080}, AgentPort: 15001, IPv6: true, IPv6Required: true})
	b = recordingBatch{failFlush: map[int]error{1: noNAT}}
	if _, err := Apply(p, &b); !errors.Is(err, noNAT) {
		t.Fatalf("pod with IPv6, no IPv6 NAT: err = %v, want the kernel's error", err)
	}

	b = recordingBatch{failFlush: map[int]error{0: noNAT}}
	if _, err := Apply(p, &b); !errors.Is(err, noNAT) || b.flushes != 1 {
		t.Fatalf("ip refused: err = %v after %d commits, want the error at once", err, b.flushes)
	}
}
