package agent

import (
	"errors"
	"strings"
	"testing"

	"github.com/detour-dev/detour/tunnel"
)

func mirrorIC(t *testing.T, name string, o *owner, mechanism string, rules ...string) *intercept {
	t.Helper()
	ic := &intercept{name: name, port: 80, mechanism: mechanism, owner: o, mirror: &mirror{}}
	if mechanism == tunnel.MechanismHTTPMirror {
		ic.http = httpIC(t, name, o, rules...).http
	}
	return ic
}

// TestMirrorsShareAPort: any number of mirrors, of any developers and with
// the same rules or none, share a port with http intercepts or (tcp-mirror
// only) a tcp intercept; an http-mirror and a tcp intercept exclude each
// other, naming the holder; a mirror's name follows the intercept rules.
func TestMirrorsShareAPort(t *testing.T) {
	alice, bob, carol := testOwner("alice@laptop", "a-secret"), testOwner("bob@desk", "b-secret"), testOwner("carol@home", "c-secret")
	type step struct {
		ic      *intercept
		refused string // a holder the refusal names; "" when it must succeed
	}
	cases := []struct {
		name  string
		steps []step
		want  map[string]int // per kind: tcp, http, tcp-mirror, http-mirror
	}{
		{"several developers mirror one port, with the same rules or none", []step{
			{mirrorIC(t, "m", alice, tunnel.MechanismHTTPMirror), ""},
			{mirrorIC(t, "m", bob, tunnel.MechanismHTTPMirror), ""},
			{mirrorIC(t, "m2", bob, tunnel.MechanismHTTPMirror, "x-dev=alice"), ""},
			{mirrorIC(t, "m", carol, tunnel.MechanismHTTPMirror, "x-dev=alice"), ""},
			{mirrorIC(t, "t", carol, tunnel.MechanismTCPMirror), ""},
		}, map[string]int{"http-mirror": 4, "tcp-mirror": 1}},
		{"mirrors beside a personal intercept, either order", []step{
			{mirrorIC(t, "m", bob, tunnel.MechanismHTTPMirror), ""},
			{httpIC(t, "web", alice, "x-dev=alice"), ""},
			{mirrorIC(t, "m", carol, tunnel.MechanismHTTPMirror, "x-dev=alice"), ""},
			{mirrorIC(t, "t", carol, tunnel.MechanismTCPMirror), ""},
		}, map[string]int{"http": 1, "http-mirror": 2, "tcp-mirror": 1}},
		{"a tcp-mirror beside a global intercept", []step{
			{tcpIC("all", alice, 80), ""},
			{mirrorIC(t, "t", bob, tunnel.MechanismTCPMirror), ""},
		}, map[string]int{"tcp": 1, "tcp-mirror": 1}},
		{"an http-mirror cannot read a global intercept's connections", []step{
			{tcpIC("all", alice, 80), ""},
			{mirrorIC(t, "m", bob, tunnel.MechanismHTTPMirror), "alice@laptop"},
		}, map[string]int{"tcp": 1}},
		{"a global intercept would blind http-mirrors", []step{
			{mirrorIC(t, "m", bob, tunnel.MechanismHTTPMirror), ""},
			{tcpIC("all", alice, 80), "bob@desk"},
		}, map[string]int{"http-mirror": 1}},
		{"re-creating a mirror replaces it", []step{
			{mirrorIC(t, "m", bob, tunnel.MechanismHTTPMirror), ""},
			{mirrorIC(t, "m", bob, tunnel.MechanismHTTPMirror, "x-dev=alice"), ""},
			{mirrorIC(t, "m", testOwner("bob@desk", "b-secret"), tunnel.MechanismTCPMirror), ""}, // his reconnected session
		}, map[string]int{"tcp-mirror": 1}},
		{"an intercept of the mirror's name takes its place", []step{
			{mirrorIC(t, "web", bob, tunnel.MechanismHTTPMirror), ""},
			{httpIC(t, "web", bob, "x-dev=bob"), ""},
		}, map[string]int{"http": 1}},
		{"a mirror of the intercept's name takes its place, even a tcp one", []step{
			{tcpIC("web", bob, 80), ""},
			{mirrorIC(t, "web", bob, tunnel.MechanismHTTPMirror), ""},
		}, map[string]int{"http-mirror": 1}},
		{"a global intercept replaces its own http-mirror of the same name", []step{
			{mirrorIC(t, "web", bob, tunnel.MechanismHTTPMirror), ""},
			{tcpIC("web", bob, 80), ""},
		}, map[string]int{"tcp": 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRegistry([]uint16{80})
			for i, s := range c.steps {
				_, err := r.create(s.ic)
				switch {
				case s.refused == "" && err != nil:
					t.Fatalf("step %d (%s %q): %v", i, s.ic.mechanism, s.ic.name, err)
				case s.refused != "" && (!errors.Is(err, tunnel.ErrAlreadyIntercepted) || !strings.Contains(err.Error(), s.refused)):
					t.Fatalf("step %d (%s %q): %v, want a refusal naming %s", i, s.ic.mechanism, s.ic.name, err, s.refused)
				}
			}
			if got := r.count(); !equalCounts(got, c.want) {
				t.Fatalf("intercepts by mechanism: %v, want %v", got, c.want)
			}
		})
	}
}

func equalCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestMirrorMovesAndGoesWithItsSession: a mirror's name on another port
// moves it; the owner's end removes mirrors with everything else; the
// list shows each mirror's counts to everyone.
func TestMirrorMovesAndGoesWithItsSession(t *testing.T) {
	alice, bob := testOwner("alice@laptop", "a-secret"), testOwner("bob@desk", "b-secret")
	r := newRegistry([]uint16{80, 81})
	m := mirrorIC(t, "m", bob, tunnel.MechanismTCPMirror)
	if _, err := r.create(m); err != nil {
		t.Fatal(err)
	}
	m.mirror.copied.Add(3)
	m.mirror.dropped.Add(2)
	list := r.list(alice)
	if len(list) != 1 || list[0].MirrorCopied != 3 || list[0].MirrorDropped != 2 || list[0].Yours || list[0].Holder != "bob@desk" {
		t.Fatalf("list = %+v, want bob's mirror with 3 copied and 2 dropped", list)
	}
	moved := mirrorIC(t, "m", bob, tunnel.MechanismTCPMirror)
	moved.port = 81
	dropped, err := r.create(moved)
	if err != nil || len(dropped) != 1 || dropped[0] != m || r.lookup(80) != nil || len(r.lookup(81).tcpMirrors) != 1 {
		t.Fatalf("move: dropped %v, err %v; port 80 %+v", dropped, err, r.lookup(80))
	}
	if gone := r.removeOwner(bob); len(gone) != 1 || r.lookup(81) != nil {
		t.Fatalf("removeOwner: %v, port 81 left %+v", gone, r.lookup(81))
	}
}
