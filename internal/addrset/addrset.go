package addrset

import (
	"net/netip"
	"sync"
	"time"
)

// Set remembers addresses the cluster DNS returned, each until its TTL
// (at least MinTTL) ends. It is bounded:
// past MaxSize addresses the expired ones go first, then the oldest.
type Set struct {
	mu    sync.Mutex
	until map[netip.Addr]time.Time
	now   func() time.Time
}

// Bounds: how many addresses, and how long each is kept.
const (
	MaxSize = 16384
	MinTTL  = 5 * time.Minute
	MaxTTL  = 24 * time.Hour
)

// New makes an empty set; now is the clock (time.Now).
func New(now func() time.Time) *Set {
	return &Set{until: map[netip.Addr]time.Time{}, now: now}
}

// Add remembers a for ttl, kept within [MinTTL, MaxTTL].
func (l *Set) Add(a netip.Addr, ttl time.Duration) {
	ttl = min(max(ttl, MinTTL), MaxTTL)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if len(l.until) >= MaxSize {
		l.evict(now)
	}
	if t, ok := l.until[a.Unmap()]; !ok || t.Before(now.Add(ttl)) {
		l.until[a.Unmap()] = now.Add(ttl)
	}
}

// evict drops expired entries, and if none were, the one ending soonest.
func (l *Set) evict(now time.Time) {
	var oldest netip.Addr
	var oldestT time.Time
	for a, t := range l.until {
		if t.Before(now) {
			delete(l.until, a)
			continue
		}
		if oldestT.IsZero() || t.Before(oldestT) {
			oldest, oldestT = a, t
		}
	}
	if len(l.until) >= MaxSize {
		delete(l.until, oldest)
	}
}

// Has reports whether a is in the set and not expired.
func (l *Set) Has(a netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.until[a.Unmap()]
	return ok && l.now().Before(t)
}
