package agent

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/detour-dev/detour/tunnel"
	"github.com/hashicorp/yamux"
)

// owner is one connected client: the session its intercepted streams go to.
type owner struct {
	id       uint64 // unique per session on this agent
	clientID string
	user     string // user@host
	session  *yamux.Session
}

type intercept struct {
	name      string
	port      uint16
	mechanism string
	owner     *owner
}

// registry holds the active intercepts: at most one per app port (the tcp
// mechanism is global). It is the only shared mutable state on the data
// path, read once per accepted connection.
type registry struct {
	mu     sync.RWMutex
	served []uint16
	byPort map[uint16]*intercept
}

func newRegistry(served []uint16) *registry {
	return &registry{served: served, byPort: map[uint16]*intercept{}}
}

func (r *registry) lookup(port uint16) *intercept {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byPort[port]
}

// create adds or moves o's intercept req.Name. Re-creating the same
// intercept is a no-op; naming an existing intercept with another port moves
// it (the old port goes back to the app).
func (r *registry) create(o *owner, req tunnel.CreateIntercept) error {
	if err := req.Validate(); err != nil {
		return err
	}
	if req.Mechanism != tunnel.MechanismTCP {
		return fmt.Errorf("intercept %q: this agent supports the %q mechanism, not %q: inject an agent image that does (an extension's image, --agent-image): %w", req.Name, tunnel.MechanismTCP, req.Mechanism, tunnel.ErrUnsupportedMechanism)
	}
	if _, ok := slices.BinarySearch(r.served, req.Port); !ok {
		return fmt.Errorf("port %d is not served by this agent (it serves %s): %w", req.Port, portList(r.served), tunnel.ErrPortNotServed)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if held := r.byPort[req.Port]; held != nil {
		if held.owner == o && held.name == req.Name {
			return nil
		}
		if held.name == req.Name && held.owner.clientID == o.clientID && held.owner.user == o.user {
			// The same client reconnected (a dropped port-forward) before
			// this agent noticed its old session died: hand it over.
			held.owner = o
			return nil
		}
		if held.owner == o {
			return fmt.Errorf("port %d is already intercepted by your intercept %q: leave it first: %w", req.Port, held.name, tunnel.ErrAlreadyIntercepted)
		}
		return fmt.Errorf("port %d is already intercepted globally by %s (intercept %q): %w", req.Port, held.owner.user, held.name, tunnel.ErrAlreadyIntercepted)
	}
	for port, ic := range r.byPort {
		if ic.owner == o && ic.name == req.Name {
			delete(r.byPort, port)
		}
	}
	r.byPort[req.Port] = &intercept{name: req.Name, port: req.Port, mechanism: req.Mechanism, owner: o}
	return nil
}

func (r *registry) remove(o *owner, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for port, ic := range r.byPort {
		if ic.owner == o && ic.name == name {
			delete(r.byPort, port)
			return nil
		}
	}
	return fmt.Errorf("no intercept named %q in this session: %w", name, tunnel.ErrInterceptNotFound)
}

// removeOwner drops every intercept of o and returns their names.
func (r *registry) removeOwner(o *owner) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var names []string
	for port, ic := range r.byPort {
		if ic.owner == o {
			names = append(names, ic.name)
			delete(r.byPort, port)
		}
	}
	sort.Strings(names)
	return names
}

// clear drops every intercept (agent shutdown) and returns their names.
func (r *registry) clear() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := make([]string, 0, len(r.byPort))
	for port, ic := range r.byPort {
		names = append(names, ic.name)
		delete(r.byPort, port)
	}
	sort.Strings(names)
	return names
}

func (r *registry) list() []tunnel.InterceptInfo {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]tunnel.InterceptInfo, 0, len(r.byPort))
	for _, ic := range r.byPort {
		out = append(out, tunnel.InterceptInfo{
			Name: ic.name, Port: ic.port, Mechanism: ic.mechanism,
			Holder: ic.owner.user, ClientID: ic.owner.clientID,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Port < out[j].Port })
	return out
}

func (r *registry) count() map[string]int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := map[string]int{}
	for _, ic := range r.byPort {
		n[ic.mechanism]++
	}
	return n
}

func portList(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ", ")
}
