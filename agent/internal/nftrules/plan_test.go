package nftrules

import (
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

func TestNewPlan(t *testing.T) {
	p, err := NewPlan(Options{AppPorts: []uint16{8443, 8080, 8080}, AgentPort: 15001, IPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Tables) != 2 || p.Tables[0].Family != nftables.TableFamilyIPv4 || p.Tables[1].Family != nftables.TableFamilyIPv6 {
		t.Fatalf("tables = %+v", p.Tables)
	}
	r := p.Tables[0].Rules[0]
	if len(r.Ports) != 2 || r.Ports[0] != 8080 || r.Ports[1] != 8443 || r.RedirectTo != 15001 {
		t.Fatalf("rule = %+v, want sorted unique ports 8080, 8443 → 15001", r)
	}
	want := `table ip detour {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname != "lo" tcp dport { 8080, 8443 } redirect to :15001 comment "detour: redirect app ports to the agent"
	}
}
`
	if got := p.String(); !strings.HasPrefix(got, want) || !strings.Contains(got, "table ip6 detour") {
		t.Fatalf("rendered plan:\n%s\nwant it to start with:\n%s", got, want)
	}
}

func TestNewPlanRejects(t *testing.T) {
	cases := map[string]Options{
		"no ports":       {AgentPort: 15001},
		"no agent port":  {AppPorts: []uint16{80}},
		"port zero":      {AppPorts: []uint16{0}, AgentPort: 15001},
		"loop on itself": {AppPorts: []uint16{80, 15001}, AgentPort: 15001},
	}
	for name, opts := range cases {
		if _, err := NewPlan(opts); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// recordingBatch is a Batch that records calls instead of talking to a kernel.
type recordingBatch struct {
	calls   []string
	rules   []*nftables.Rule
	flushes int
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
	b.calls = append(b.calls, "add set")
	return nil
}
func (b *recordingBatch) AddRule(r *nftables.Rule) *nftables.Rule {
	b.calls = append(b.calls, "add rule")
	b.rules = append(b.rules, r)
	return r
}
func (b *recordingBatch) Flush() error { b.flushes++; return nil }

func TestApplyIsOneFlushedTransactionThatRebuildsTheTable(t *testing.T) {
	p, _ := NewPlan(Options{AppPorts: []uint16{8080}, AgentPort: 15001})
	var b recordingBatch
	if err := Apply(p, &b); err != nil {
		t.Fatal(err)
	}
	want := []string{"add table ip detour", "flush table ip detour", "add chain prerouting", "add set", "add rule"}
	if strings.Join(b.calls, "; ") != strings.Join(want, "; ") {
		t.Fatalf("calls = %q, want %q", b.calls, want)
	}
	if b.flushes != 1 {
		t.Fatalf("%d flushes, want exactly 1 (atomic)", b.flushes)
	}
	r := b.rules[0]
	if r.Chain.Type != nftables.ChainTypeNAT || *r.Chain.Hooknum != *nftables.ChainHookPrerouting {
		t.Fatalf("rule not in a nat prerouting chain: %+v", r.Chain)
	}
	redir, ok := r.Exprs[len(r.Exprs)-1].(*expr.Redir)
	if !ok || redir.RegisterProtoMin != 1 {
		t.Fatalf("last expression = %#v, want a redirect from register 1", r.Exprs[len(r.Exprs)-1])
	}
	imm := r.Exprs[len(r.Exprs)-2].(*expr.Immediate)
	if imm.Data[0] != 15001>>8 || imm.Data[1] != 15001&0xff {
		t.Fatalf("redirect port bytes %v, want 15001 big-endian", imm.Data)
	}
}
