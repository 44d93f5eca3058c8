package agent

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"regexp/syntax"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/detour-dev/detour/tunnel"
	"github.com/hashicorp/yamux"
)

// owner is one connected client: the session its intercepted streams go to.
type owner struct {
	id       uint64            // unique per session on this agent
	key      [sha256.Size]byte // SHA-256 of the hello's secret: who the client is
	user     string            // user@host: a label, anyone may claim any
	clientID string            // a label too, for the agent's log only
	session  *yamux.Session
}

func newOwner(id uint64, h tunnel.Hello, session *yamux.Session) *owner {
	return &owner{id: id, key: sha256.Sum256([]byte(h.Secret)), user: h.User, clientID: h.ClientID, session: session}
}

type intercept struct {
	name      string
	port      uint16
	mechanism string
	owner     *owner
	http      *httpIntercept // nil for tcp and tcp-mirror
	mirror    *mirror        // nil unless a mirror
}

// portState is who holds one app port: one tcp intercept, or any number of
// http ones; and any number of mirrors besides (mirror.go). It is never
// changed once published: the registry replaces it, so the data path reads
// it without holding a lock.
type portState struct {
	tcp  *intercept
	http []*intercept // the most specific (most header rules) first

	tcpMirrors, httpMirrors []*intercept
}

// clone copies p (nil: an empty port) for a next state: the slices are
// new, the intercepts shared.
func (p *portState) clone() *portState {
	next := &portState{}
	if p != nil {
		*next = *p
		next.http = slices.Clone(p.http)
		next.tcpMirrors, next.httpMirrors = slices.Clone(p.tcpMirrors), slices.Clone(p.httpMirrors)
	}
	return next
}

func (p *portState) empty() bool {
	return p == nil || p.tcp == nil && len(p.http) == 0 && len(p.tcpMirrors) == 0 && len(p.httpMirrors) == 0
}

// all lists the port's intercepts, mirrors included.
func (p *portState) all() []*intercept {
	if p == nil {
		return nil
	}
	var out []*intercept
	if p.tcp != nil {
		out = append(out, p.tcp)
	}
	out = append(out, p.http...)
	out = append(out, p.tcpMirrors...)
	return append(out, p.httpMirrors...)
}

// registry holds the active intercepts. It is the only shared mutable state
// on the data path, read once per accepted connection (and, on http ports,
// once per request).
type registry struct {
	mu     sync.RWMutex
	served []uint16
	byPort map[uint16]*portState
	// everHeld: an intercept was created once; lastHeld: when the last
	// removal happened (the registry held something until then). Replace
	// mode's report reads them (replace.go).
	everHeld bool
	lastHeld time.Time
}

func newRegistry(served []uint16) *registry {
	return &registry{served: served, byPort: map[uint16]*portState{}}
}

func (r *registry) lookup(port uint16) *portState {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byPort[port]
}

// create adds or moves o's intercept ic (ic.owner is o). Re-creating the same
// intercept is a no-op for tcp and replaces the settings for http; naming an
// existing intercept with another port moves it (the old port goes back to
// the app). It returns the intercepts it replaced or moved away, whose
// resources the caller releases.
func (r *registry) create(ic *intercept) (dropped []*intercept, err error) {
	if err := r.serves(ic.port); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.everHeld = true
	held := r.byPort[ic.port]
	next, dropped, err := admit(held, ic)
	if err != nil {
		return nil, err
	}
	if next == held {
		return nil, nil // the same intercept again: nothing changes
	}
	r.publish(ic.port, next)
	return append(dropped, r.moveAway(ic)...), nil
}

// admit decides what becomes of a port held as held when ic is created on
// it: the port's next state and the intercepts ic replaces there, or why ic
// is refused. It changes nothing.
func admit(held *portState, ic *intercept) (next *portState, replaced []*intercept, err error) {
	switch ic.mechanism {
	case tunnel.MechanismTCP:
		return admitTCP(held, ic)
	case tunnel.MechanismHTTP:
		return admitHTTP(held, ic)
	case tunnel.MechanismTCPMirror, tunnel.MechanismHTTPMirror:
		next := held.clone()
		replaced, err := addMirror(next, ic)
		if err != nil {
			return nil, nil, err
		}
		return next, replaced, nil
	default:
		return nil, nil, unsupportedMechanism(ic.name, ic.mechanism)
	}
}

// admitTCP: a global intercept needs the port to itself. The one exception
// is a hand-over: the same intercept of the same client (the same secret)
// from a new session, when the client reconnected (a dropped port-forward)
// before this agent noticed its old session died. The same session
// re-creating it changes nothing.
func admitTCP(held *portState, ic *intercept) (*portState, []*intercept, error) {
	o := ic.owner
	if t := held.tcpHolder(); t != nil {
		switch {
		case t.owner == o && t.name == ic.name:
			return held, nil, nil
		case t.name == ic.name && t.owner.sameClient(o):
			next := held.clone()
			next.tcp = ic
			return next, []*intercept{t}, nil
		case t.owner == o:
			return nil, nil, fmt.Errorf("port %d is already intercepted by your intercept %q: leave it first: %w", ic.port, t.name, tunnel.ErrAlreadyIntercepted)
		default:
			return nil, nil, fmt.Errorf("port %d is already intercepted globally by %s (intercept %q): %w", ic.port, t.owner.user, t.name, tunnel.ErrAlreadyIntercepted)
		}
	}
	if held != nil && len(held.http) > 0 {
		return nil, nil, fmt.Errorf("port %d has personal (http) intercepts by %s: a global tcp intercept would take their requests; use --mechanism http with your own header, or ask them to leave: %w",
			ic.port, holders(held.http), tunnel.ErrAlreadyIntercepted)
	}
	if err := tcpBlindsMirrors(held, ic); err != nil {
		return nil, nil, err
	}
	next := held.clone()
	next.tcp = ic
	return next, nil, nil
}

// admitHTTP: personal intercepts share a port with each other (mayShare
// says when), never with a global one. An intercept of the same name and
// client (this session or an earlier one of the same secret) is replaced:
// new settings, or a hand-over. The most specific rule set is tried first.
func admitHTTP(held *portState, ic *intercept) (*portState, []*intercept, error) {
	if t := held.tcpHolder(); t != nil {
		return nil, nil, fmt.Errorf("port %d is intercepted globally (tcp) by %s (intercept %q): http intercepts cannot share a port with it until it leaves: %w",
			ic.port, t.owner.user, t.name, tunnel.ErrAlreadyIntercepted)
	}
	next := held.clone()
	o := ic.owner
	replaced := -1
	for i, other := range next.http {
		if other.name == ic.name && (other.owner == o || other.owner.sameClient(o)) {
			replaced = i
			continue
		}
		if err := mayShare(other, ic); err != nil {
			return nil, nil, err
		}
	}
	var dropped []*intercept
	if replaced >= 0 {
		dropped = append(dropped, next.http[replaced])
		next.http[replaced] = ic
	} else {
		next.http = append(next.http, ic)
	}
	sort.SliceStable(next.http, func(i, j int) bool {
		return specificity(&next.http[i].http.settings) > specificity(&next.http[j].http.settings)
	})
	return next, dropped, nil
}

// moveAway drops ic's owner's other intercepts of ic's name: the same name
// on another port is a move, and the old port goes back to the app; on
// ic's port, an intercept and a mirror of one name replace each other. It
// must be called with r.mu held.
func (r *registry) moveAway(ic *intercept) (moved []*intercept) {
	for port, st := range r.byPort {
		if gone, rest := st.without(func(x *intercept) bool { return x != ic && x.owner == ic.owner && x.name == ic.name }); len(gone) > 0 {
			moved = append(moved, gone...)
			r.publish(port, rest)
		}
	}
	return moved
}

// serves says whether port is one of the app ports this agent relays.
func (r *registry) serves(port uint16) error {
	if _, ok := slices.BinarySearch(r.served, port); !ok {
		return fmt.Errorf("port %d is not served by this agent (it serves %s): %w", port, portList(r.served), tunnel.ErrPortNotServed)
	}
	return nil
}

func unsupportedMechanism(name, mechanism string) error {
	return fmt.Errorf("intercept %q: this agent supports the %s mechanisms, not %q: inject an agent image that does (an extension's image, --agent-image): %w",
		name, strings.Join(tunnel.Mechanisms, ", "), mechanism, tunnel.ErrUnsupportedMechanism)
}

func (p *portState) tcpHolder() *intercept {
	if p == nil {
		return nil
	}
	return p.tcp
}

// without returns the intercepts drop selects and the state left without them.
func (p *portState) without(drop func(*intercept) bool) (gone []*intercept, rest *portState) {
	rest = &portState{}
	if p.tcp != nil {
		if drop(p.tcp) {
			gone = append(gone, p.tcp)
		} else {
			rest.tcp = p.tcp
		}
	}
	keep := func(ics []*intercept) []*intercept {
		var kept []*intercept
		for _, ic := range ics {
			if drop(ic) {
				gone = append(gone, ic)
			} else {
				kept = append(kept, ic)
			}
		}
		return kept
	}
	rest.http = keep(p.http)
	rest.tcpMirrors = keep(p.tcpMirrors)
	rest.httpMirrors = keep(p.httpMirrors)
	return gone, rest
}

// publish must be called with r.mu held.
func (r *registry) publish(port uint16, st *portState) {
	if st.empty() {
		delete(r.byPort, port)
		return
	}
	r.byPort[port] = st
}

// removeWhere drops every intercept drop selects and returns them.
func (r *registry) removeWhere(drop func(*intercept) bool) []*intercept {
	r.mu.Lock()
	defer r.mu.Unlock()
	var all []*intercept
	for port, st := range r.byPort {
		if gone, rest := st.without(drop); len(gone) > 0 {
			all = append(all, gone...)
			r.publish(port, rest)
		}
	}
	if len(all) > 0 {
		r.lastHeld = time.Now()
	}
	sort.Slice(all, func(i, j int) bool { return all[i].name < all[j].name })
	return all
}

func (r *registry) remove(o *owner, name string) (*intercept, error) {
	gone := r.removeWhere(func(ic *intercept) bool { return ic.owner == o && ic.name == name })
	if len(gone) == 0 {
		return nil, fmt.Errorf("no intercept named %q in this session: %w", name, tunnel.ErrInterceptNotFound)
	}
	return gone[0], nil
}

// removeOwner drops every intercept of o.
func (r *registry) removeOwner(o *owner) []*intercept {
	return r.removeWhere(func(ic *intercept) bool { return ic.owner == o })
}

// clear drops every intercept (agent shutdown).
func (r *registry) clear() []*intercept {
	return r.removeWhere(func(*intercept) bool { return true })
}

// list is every intercept, as o sees it (Yours marks o's own).
func (r *registry) list(o *owner) []tunnel.InterceptInfo {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]tunnel.InterceptInfo, 0, len(r.byPort))
	for _, st := range r.byPort {
		for _, ic := range st.all() {
			info := tunnel.InterceptInfo{
				Name: ic.name, Port: ic.port, Mechanism: ic.mechanism,
				Holder: ic.owner.user, Yours: ic.owner == o,
			}
			if ic.http != nil {
				for _, m := range ic.http.settings.Match {
					info.Match = append(info.Match, m.String())
				}
				info.Methods = ic.http.settings.Methods
				info.Path = ic.http.settings.Path.String()
				info.AppProtocol = ic.http.appProtocol.String()
			}
			if ic.mirror != nil {
				info.MirrorCopied, info.MirrorDropped = ic.mirror.copied.Load(), ic.mirror.dropped.Load()
			}
			out = append(out, info)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Port != out[j].Port {
			return out[i].Port < out[j].Port
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// heldState says whether the registry holds an intercept now, whether it
// ever did, and when it last stopped holding one.
func (r *registry) heldState() (held, ever bool, last time.Time) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, st := range r.byPort {
		if len(st.all()) > 0 {
			held = true
			break
		}
	}
	return held, r.everHeld, r.lastHeld
}

func (r *registry) count() map[string]int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := map[string]int{}
	for _, st := range r.byPort {
		for _, ic := range st.all() {
			n[ic.mechanism]++
		}
	}
	return n
}

// sameClient says whether other proved to be o's client: the same
// secret. Labels (client id, user) prove nothing: list-intercepts shows
// the user to everyone.
func (o *owner) sameClient(other *owner) bool {
	return subtle.ConstantTimeCompare(o.key[:], other.key[:]) == 1
}

func names(ics []*intercept) []string {
	out := make([]string, len(ics))
	for i, ic := range ics {
		out[i] = ic.name
	}
	return out
}

func holders(ics []*intercept) string {
	var hs []string
	for _, ic := range ics {
		if !slices.Contains(hs, ic.owner.user) {
			hs = append(hs, ic.owner.user)
		}
	}
	return strings.Join(hs, ", ")
}

// mayShare says whether http intercept ic may share a port with other.
// Another client's rules must be disjoint from ic's (see disjoint), or one
// of the two would take requests meant for the other (a superset of
// alice's rules plus a header she always sends wins as the more specific
// match). A client's own intercepts only may not repeat a rule set exactly.
func mayShare(other, ic *intercept) error {
	a, b := &other.http.settings, &ic.http.settings
	if other.owner == ic.owner || other.owner.sameClient(ic.owner) {
		if sameRules(a, b) {
			return fmt.Errorf("port %d: your intercept %q already matches exactly %s: choose another --http-match, --http-method or --http-path-*: %w",
				ic.port, other.name, ruleList(a), tunnel.ErrAlreadyIntercepted)
		}
		return nil
	}
	if a.PreviewToken != "" && subtle.ConstantTimeCompare([]byte(a.PreviewToken), []byte(b.PreviewToken)) == 1 {
		// A preview token routes on its own (its cookie stands in for the
		// header rules): the same token from another owner would take the
		// browsers of whoever the link was shared with.
		return fmt.Errorf("port %d: %s's intercept %q already uses this preview token: a preview link routes to one developer only: %w",
			ic.port, other.owner.user, other.name, tunnel.ErrAlreadyIntercepted)
	}
	if !disjoint(a, b) {
		return fmt.Errorf("port %d: %s holds intercept %q matching %s; rules %s could match the same requests: "+
			"intercepts of different developers must differ in a header both name (e.g. each its own x-detour-intercept-id, as --http-match auto does), "+
			"or take different methods, or paths no request has both: %w",
			ic.port, other.owner.user, other.name, ruleList(a), ruleList(b), tunnel.ErrAlreadyIntercepted)
	}
	return nil
}

// disjoint reports whether no request can match both rule sets — as far as
// can be proven cheaply; when in doubt they overlap. Any one suffices:
//   - a header both name (a baggage member both name, by its exact key)
//     with different values;
//   - both have method rules, and no method in common;
//   - both have path rules no one path satisfies (pathsDisjoint).
//
// As for headers, "different values" assumes a request carries one value
// of the header: a request that sends both developers' values is routed to
// the more specific rule set.
func disjoint(a, b *tunnel.HTTPSettings) bool {
	for _, x := range a.Match {
		for _, y := range b.Match {
			if strings.EqualFold(x.Name, y.Name) && x.Member == y.Member && x.Value != y.Value {
				return true
			}
		}
	}
	if len(a.Methods) > 0 && len(b.Methods) > 0 && !slices.ContainsFunc(a.Methods, func(m string) bool { return slices.Contains(b.Methods, m) }) {
		return true
	}
	return pathsDisjoint(&a.Path, &b.Path)
}

// pathsDisjoint reports whether no path satisfies both rules. Equal paths
// are decided exactly (a regex is run on the other's exact path); prefixes
// are disjoint when neither is a prefix of the other; a regex beyond that
// is known only by its literal prefix — the text every path it matches
// starts with (regexLiteralPrefix) — so two regexes, or a regex and a
// prefix, are disjoint only when those prefixes diverge: /v1/.* and
// /v2/.* are, /v1/a.* and /v1/b.* are not (they are refused, though no
// path matches both).
func pathsDisjoint(p, q *tunnel.PathMatch) bool {
	if p.Kind == "" || q.Kind == "" {
		return false
	}
	if q.Kind == tunnel.ArgPathEqual {
		p, q = q, p
	}
	if p.Kind == tunnel.ArgPathEqual {
		return !q.Matches(p.Value) // exact for every kind of q
	}
	return diverge(pathLiteralPrefix(p), pathLiteralPrefix(q))
}

// pathLiteralPrefix is what every path a prefix or regex rule takes starts with.
func pathLiteralPrefix(p *tunnel.PathMatch) string {
	if p.Kind == tunnel.ArgPathPrefix {
		return p.Value
	}
	return regexLiteralPrefix(p.Value)
}

// diverge says whether no string starts with both a and b.
func diverge(a, b string) bool {
	return !strings.HasPrefix(a, b) && !strings.HasPrefix(b, a)
}

// regexLiteralPrefix is the literal text every whole-string match of expr
// starts with: its leading case-sensitive literals, read from the parsed
// expression ("" when it starts otherwise, e.g. with (?i), a class or an
// alternation). Not on the data path: conflicts are checked on create.
func regexLiteralPrefix(expr string) string {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return ""
	}
	re = re.Simplify()
	var b strings.Builder
	var walk func(re *syntax.Regexp) bool // false: stop, what follows is not literal
	walk = func(re *syntax.Regexp) bool {
		switch re.Op {
		case syntax.OpLiteral:
			if re.Flags&syntax.FoldCase != 0 {
				return false
			}
			b.WriteString(string(re.Rune))
			return true
		case syntax.OpBeginText, syntax.OpEmptyMatch:
			return true // the rule is anchored anyway
		case syntax.OpCapture:
			return walk(re.Sub[0])
		case syntax.OpConcat:
			for _, sub := range re.Sub {
				if !walk(sub) {
					return false
				}
			}
			return true
		}
		return false
	}
	walk(re)
	return b.String()
}

// specificity orders a port's http intercepts: the one with more rules is
// tried first.
func specificity(s *tunnel.HTTPSettings) int {
	n := len(s.Match)
	if len(s.Methods) > 0 {
		n++
	}
	if s.Path.Kind != "" {
		n++
	}
	return n
}

func sameRules(a, b *tunnel.HTTPSettings) bool {
	if len(a.Match) != len(b.Match) || len(a.Methods) != len(b.Methods) || a.Path.Kind != b.Path.Kind || a.Path.Value != b.Path.Value {
		return false
	}
	for _, m := range a.Match {
		if !slices.Contains(b.Match, m) {
			return false
		}
	}
	for _, m := range a.Methods {
		if !slices.Contains(b.Methods, m) {
			return false
		}
	}
	return true
}

// ruleList renders a rule set for messages: x-dev=alice and method GET and path-prefix=/api/.
func ruleList(s *tunnel.HTTPSettings) string {
	parts := make([]string, 0, len(s.Match)+2)
	for _, m := range s.Match {
		parts = append(parts, m.String())
	}
	if len(s.Methods) > 0 {
		parts = append(parts, "method "+strings.Join(s.Methods, "|"))
	}
	if s.Path.Kind != "" {
		parts = append(parts, s.Path.String())
	}
	return strings.Join(parts, " and ")
}

func portList(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ", ")
}
