package cluster

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

func TestGuardRulesetCoversRanges(t *testing.T) {
	rs := guardRuleset([]string{"eth0", "ens3"})
	for _, want := range append([]string{`"eth0"`, `"ens3"`, `"` + VethHost + `"`, "priority -200"}, GuardedRanges...) {
		if !strings.Contains(rs, want) {
			t.Errorf("guard ruleset lacks %q:\n%s", want, rs)
		}
	}
	// Each counted drop logs the packet, for check-guard to show.
	if got := len(regexp.MustCompile(`counter log prefix "detour-guard [a-z]+: " drop`).FindAllString(rs, -1)); got != 6 {
		t.Errorf("guard has %d counted, logged drops, want 6 (VerifyGuard expects 3+2+1)", got)
	}
}

// TestGuardRulesetParses asks nft to check the ruleset without applying it.
func TestGuardRulesetParses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("nft -c needs root")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed (make deps)")
	}
	if _, err := shIn(context.Background(), []byte(guardRuleset([]string{"eth0"})), "nft", "-c", "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

func TestPrefixMatch(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string
	}{{`/a\040b`, "/a b"}, {"/plain", "/plain"}} {
		if got := unescapeMount(c.in); got != c.want {
			t.Errorf("unescapeMount(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
