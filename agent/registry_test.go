package agent

import (
	"errors"
	"strings"
	"testing"

	"github.com/detour-dev/detour/tunnel"
)

func httpIC(t testing.TB, name string, o *owner, rules ...string) *intercept {
	t.Helper()
	var ms []tunnel.HeaderMatch
	for _, r := range rules {
		m, err := tunnel.ParseHeaderMatch(r)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	return &intercept{name: name, port: 80, mechanism: tunnel.MechanismHTTP, owner: o,
		http: &httpIntercept{settings: tunnel.HTTPSettings{Match: ms}}}
}

func testOwner(user, secret string) *owner {
	return newOwner(1, tunnel.Hello{User: user, ClientID: user, Secret: secret}, nil)
}

// TestHTTPRuleSetsOfDifferentOwnersMustBeDisjoint: a rule set of another
// owner is refused unless some header both name has different values —
// a superset of alice's rules would otherwise win her requests as the more
// specific match. The error names the holder. One's own intercepts only
// may not repeat a rule set exactly.
func TestHTTPRuleSetsOfDifferentOwnersMustBeDisjoint(t *testing.T) {
	alice, bob := testOwner("alice@laptop", "a-secret"), testOwner("bob@desk", "b-secret")
	aliceAgain := testOwner("alice@laptop", "a-secret") // her reconnected session
	cases := []struct {
		name   string
		second *intercept
		ok     bool
	}{
		{"superset of alice's id and a header she sends", httpIC(t, "b", bob, "x-detour-intercept-id=alice-1", "x-user=alice"), false},
		{"the same rules", httpIC(t, "b", bob, "x-detour-intercept-id=alice-1"), false},
		{"a subset by another header", httpIC(t, "b", bob, "x-user=alice"), false},
		{"the same header, another value", httpIC(t, "b", bob, "x-detour-intercept-id=bob-1"), true},
		{"the same header in another case, another value", httpIC(t, "b", bob, "X-Detour-Intercept-Id=bob-1", "x-user=alice"), true},
		{"alice's own second intercept, overlapping", httpIC(t, "b", aliceAgain, "x-detour-intercept-id=alice-1", "x-beta=1"), true},
		{"alice's own second intercept, the same rules", httpIC(t, "b", aliceAgain, "x-detour-intercept-id=alice-1"), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRegistry([]uint16{80})
			if _, err := r.create(httpIC(t, "a", alice, "x-detour-intercept-id=alice-1")); err != nil {
				t.Fatal(err)
			}
			_, err := r.create(c.second)
			if c.ok != (err == nil) {
				t.Fatalf("create: %v, want ok=%v", err, c.ok)
			}
			if err != nil && (!errors.Is(err, tunnel.ErrAlreadyIntercepted) || (c.second.owner == bob && !strings.Contains(err.Error(), "alice@laptop"))) {
				t.Fatalf("refusal %v: want ErrAlreadyIntercepted naming the holder", err)
			}
			if err != nil && len(r.lookup(80).http) != 1 {
				t.Fatalf("a refused create changed the port: %+v", r.lookup(80).http)
			}
		})
	}
}

// TestPreviewTokenIsOneOwners: a preview token routes on its own, so
// another owner registering the same token (copied from a shared link),
// however disjoint the rules, is refused naming the holder.
func TestPreviewTokenIsOneOwners(t *testing.T) {
	alice, bob := testOwner("alice@laptop", "a-secret"), testOwner("bob@desk", "b-secret")
	r := newRegistry([]uint16{80})
	first := httpIC(t, "a", alice, "x-detour-intercept-id=alice-1")
	first.http.settings.PreviewToken = "0123456789abcdef"
	if _, err := r.create(first); err != nil {
		t.Fatal(err)
	}
	thief := httpIC(t, "b", bob, "x-detour-intercept-id=bob-1", "x-dev=bob")
	thief.http.settings.PreviewToken = "0123456789abcdef"
	if _, err := r.create(thief); !errors.Is(err, tunnel.ErrAlreadyIntercepted) || !strings.Contains(err.Error(), "alice@laptop") {
		t.Fatalf("the same token from bob: %v, want a refusal naming alice", err)
	}
	own := httpIC(t, "b", bob, "x-detour-intercept-id=bob-1")
	own.http.settings.PreviewToken = "fedcba9876543210"
	if _, err := r.create(own); err != nil {
		t.Fatalf("bob's own token: %v", err)
	}
}
