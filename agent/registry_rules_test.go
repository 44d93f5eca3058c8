package agent

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/detour-dev/detour/tunnel"
)

func tcpIC(name string, o *owner, port uint16) *intercept {
	return &intercept{name: name, port: port, mechanism: tunnel.MechanismTCP, owner: o}
}

// label names an intercept in the tables below: user/name@port.
func label(ic *intercept) string {
	return strings.Join([]string{ic.owner.user, "/", ic.name, "@", portList([]uint16{ic.port})}, "")
}

func labels(ics []*intercept) []string {
	out := []string{}
	for _, ic := range ics {
		out = append(out, label(ic))
	}
	return out
}

// TestAdmit pins the registry's rules for one port, as the pure decision
// admit makes them: which creates are refused (and why), which replace an
// intercept (new settings, or a hand-over to a reconnected client), and in
// what order a port's http intercepts are tried.
func TestAdmit(t *testing.T) {
	alice := testOwner("alice@laptop", "a-secret")
	aliceAgain := testOwner("alice@laptop", "a-secret") // her reconnected session: the same secret
	aliceImpostor := testOwner("alice@laptop", "stolen-label")
	bob := testOwner("bob@desk", "b-secret")
	withPath := func(ic *intercept, prefix string) *intercept {
		ic.http.settings.Path = tunnel.PathMatch{Kind: tunnel.ArgPathPrefix, Value: prefix}
		return ic
	}

	cases := []struct {
		name     string
		held     []*intercept // created on the port first, in order
		ic       *intercept
		wantErr  error  // nil: admitted
		errHas   string // in the refusal
		wantTCP  string // label of the port's tcp intercept after, "" none
		wantHTTP []string
		replaced []string
	}{
		{name: "tcp on a free port", ic: tcpIC("a", alice, 80), wantTCP: "alice@laptop/a@80"},
		{name: "http on a free port", ic: httpIC(t, "a", alice, "x-dev=alice"), wantHTTP: []string{"alice@laptop/a@80"}},
		{name: "tcp again by the same session: nothing changes",
			held: []*intercept{tcpIC("a", alice, 80)}, ic: tcpIC("a", alice, 80), wantTCP: "alice@laptop/a@80"},
		{name: "tcp handed over to the same client's new session",
			held: []*intercept{tcpIC("a", alice, 80)}, ic: tcpIC("a", aliceAgain, 80),
			wantTCP: "alice@laptop/a@80", replaced: []string{"alice@laptop/a@80"}},
		{name: "tcp: a user label is no proof, no hand-over",
			held: []*intercept{tcpIC("a", alice, 80)}, ic: tcpIC("a", aliceImpostor, 80),
			wantErr: tunnel.ErrAlreadyIntercepted, errHas: "globally by alice@laptop"},
		{name: "tcp: the same session under another name is told to leave first",
			held: []*intercept{tcpIC("a", alice, 80)}, ic: tcpIC("b", alice, 80),
			wantErr: tunnel.ErrAlreadyIntercepted, errHas: `your intercept "a": leave it first`},
		{name: "tcp: the same client's other session under another name is refused",
			held: []*intercept{tcpIC("a", alice, 80)}, ic: tcpIC("b", aliceAgain, 80),
			wantErr: tunnel.ErrAlreadyIntercepted, errHas: "globally by alice@laptop"},
		{name: "tcp over another developer's tcp",
			held: []*intercept{tcpIC("a", alice, 80)}, ic: tcpIC("b", bob, 80),
			wantErr: tunnel.ErrAlreadyIntercepted, errHas: `globally by alice@laptop (intercept "a")`},
		{name: "tcp over http intercepts names their holders",
			held: []*intercept{httpIC(t, "a", alice, "x-dev=alice"), httpIC(t, "b", bob, "x-dev=bob")}, ic: tcpIC("c", alice, 80),
			wantErr: tunnel.ErrAlreadyIntercepted, errHas: "personal (http) intercepts by alice@laptop, bob@desk"},
		{name: "http over a tcp intercept",
			held: []*intercept{tcpIC("a", alice, 80)}, ic: httpIC(t, "b", bob, "x-dev=bob"),
			wantErr: tunnel.ErrAlreadyIntercepted, errHas: `intercepted globally (tcp) by alice@laptop (intercept "a")`},
		{name: "http again by the same session: new settings replace the old",
			held: []*intercept{httpIC(t, "a", alice, "x-dev=alice")}, ic: httpIC(t, "a", alice, "x-dev=alice2"),
			wantHTTP: []string{"alice@laptop/a@80"}, replaced: []string{"alice@laptop/a@80"}},
		{name: "http handed over to the same client's new session",
			held: []*intercept{httpIC(t, "a", alice, "x-dev=alice")}, ic: httpIC(t, "a", aliceAgain, "x-dev=alice"),
			wantHTTP: []string{"alice@laptop/a@80"}, replaced: []string{"alice@laptop/a@80"}},
		{name: "http: another developer's intercept of the same name is no hand-over",
			held: []*intercept{httpIC(t, "a", alice, "x-dev=alice")}, ic: httpIC(t, "a", bob, "x-dev=bob"),
			wantHTTP: []string{"alice@laptop/a@80", "bob@desk/a@80"}},
		{name: "http: the more specific rule set is tried first",
			held: []*intercept{httpIC(t, "a", alice, "x-dev=alice")}, ic: withPath(httpIC(t, "b", bob, "x-dev=bob"), "/api/"),
			wantHTTP: []string{"bob@desk/b@80", "alice@laptop/a@80"}},
		{name: "http: overlapping rules of another developer",
			held: []*intercept{httpIC(t, "a", alice, "x-dev=alice")}, ic: httpIC(t, "b", bob, "x-other=1"),
			wantErr: tunnel.ErrAlreadyIntercepted, errHas: "alice@laptop holds intercept"},
		{name: "an unknown mechanism",
			ic:      &intercept{name: "a", port: 80, mechanism: "grpc", owner: alice},
			wantErr: tunnel.ErrUnsupportedMechanism, errHas: `not "grpc"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var held *portState
			for _, h := range c.held {
				next, _, err := admit(held, h)
				if err != nil {
					t.Fatalf("setting up %s: %v", label(h), err)
				}
				held = next
			}
			before := labels(held.all())
			next, replaced, err := admit(held, c.ic)
			if !slices.Equal(labels(held.all()), before) {
				t.Fatalf("admit changed the state it was given: %v, was %v", labels(held.all()), before)
			}
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) || !strings.Contains(err.Error(), c.errHas) {
					t.Fatalf("admit: %v, want %v containing %q", err, c.wantErr, c.errHas)
				}
				return
			}
			if err != nil {
				t.Fatalf("admit: %v", err)
			}
			gotTCP := ""
			if next.tcp != nil {
				gotTCP = label(next.tcp)
			}
			if gotTCP != c.wantTCP || !slices.Equal(labels(next.http), append([]string{}, c.wantHTTP...)) {
				t.Fatalf("next: tcp %q http %v, want tcp %q http %v", gotTCP, labels(next.http), c.wantTCP, c.wantHTTP)
			}
			if !slices.Equal(labels(replaced), append([]string{}, c.replaced...)) {
				t.Fatalf("replaced %v, want %v", labels(replaced), c.replaced)
			}
			if len(c.replaced) > 0 && !slices.Contains(next.all(), c.ic) {
				t.Fatalf("the new intercept is not on the port: %v", labels(next.all()))
			}
		})
	}
}

// TestRegistryCreateMovesAName: the same owner naming an intercept on
// another port moves it, for either mechanism; a port that is not served
// is refused; a refused create leaves every port as it was.
func TestRegistryCreateMovesAName(t *testing.T) {
	alice, bob := testOwner("alice@laptop", "a-secret"), testOwner("bob@desk", "b-secret")
	r := newRegistry([]uint16{80, 81, 82})
	if _, err := r.create(tcpIC("a", alice, 80)); err != nil {
		t.Fatal(err)
	}
	dropped, err := r.create(tcpIC("a", alice, 81))
	if err != nil || !slices.Equal(labels(dropped), []string{"alice@laptop/a@80"}) {
		t.Fatalf("move to 81: dropped %v, %v; want the intercept on 80", labels(dropped), err)
	}
	if r.lookup(80) != nil || r.lookup(81).tcp == nil {
		t.Fatalf("after the move: 80 %v, 81 %v", labels(r.lookup(80).all()), labels(r.lookup(81).all()))
	}
	// bob's intercept of the same name is his own: not moved.
	if _, err := r.create(tcpIC("a", bob, 82)); err != nil {
		t.Fatal(err)
	}
	if r.lookup(81).tcp == nil {
		t.Fatal("bob's create moved alice's intercept")
	}
	// Naming it on 80 again, as http, moves it off 81.
	if _, err := r.create(httpIC(t, "a", alice, "x-dev=alice")); err != nil {
		t.Fatalf("http on 80: %v", err)
	}
	if r.lookup(81) != nil {
		t.Fatalf("the http create of the same name did not move the tcp one off 81")
	}
	before := r.list(alice)
	if _, err := r.create(tcpIC("b", alice, 82)); !errors.Is(err, tunnel.ErrAlreadyIntercepted) {
		t.Fatalf("tcp over bob's: %v", err)
	}
	if _, err := r.create(tcpIC("a", alice, 83)); !errors.Is(err, tunnel.ErrPortNotServed) || !strings.Contains(err.Error(), "80, 81, 82") {
		t.Fatalf("an unserved port: %v", err)
	}
	if after := r.list(alice); !slices.EqualFunc(before, after, func(x, y tunnel.InterceptInfo) bool { return x.Name == y.Name && x.Port == y.Port }) {
		t.Fatalf("refused creates changed the registry: %+v, was %+v", after, before)
	}
}

// TestRegistryHandOverMovesTheNewSessionsName: a tcp hand-over is a create
// like any other, so the new session's intercept of the same name on
// another port moves (as it does for http). It used to stay: the session
// then held the name twice, and leaving it released only one.
func TestRegistryHandOverMovesTheNewSessionsName(t *testing.T) {
	alice, aliceAgain := testOwner("alice@laptop", "a-secret"), testOwner("alice@laptop", "a-secret")
	for _, mech := range []string{tunnel.MechanismTCP, tunnel.MechanismHTTP} {
		t.Run(mech, func(t *testing.T) {
			mk := func(o *owner, port uint16) *intercept {
				if mech == tunnel.MechanismTCP {
					return tcpIC("a", o, port)
				}
				ic := httpIC(t, "a", o, "x-dev=alice")
				ic.port = port
				return ic
			}
			r := newRegistry([]uint16{80, 81})
			old := mk(alice, 81)
			if _, err := r.create(old); err != nil {
				t.Fatal(err)
			}
			if _, err := r.create(mk(aliceAgain, 80)); err != nil {
				t.Fatal(err)
			}
			dropped, err := r.create(mk(aliceAgain, 81))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(dropped, old) || len(dropped) != 2 {
				t.Fatalf("dropped %v: want the old session's on 81 and the new one's on 80", labels(dropped))
			}
			if r.lookup(80) != nil {
				t.Fatalf("port 80 still held: %v", labels(r.lookup(80).all()))
			}
		})
	}
}
