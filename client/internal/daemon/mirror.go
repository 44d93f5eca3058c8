package daemon

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/tunnel"
)

// mirrorRefresh bounds how long status waits for the agents' counts.
const mirrorRefresh = 2 * time.Second

// refreshMirrors asks every pod of the mirrors among runners for its
// counts, all at once, so that status shows them as they are now (the
// holder check refreshes them every holderCheck otherwise).
func refreshMirrors(ctx context.Context, runners []*runner) {
	ctx, cancel := context.WithTimeout(ctx, mirrorRefresh)
	defer cancel()
	var wg sync.WaitGroup
	for _, r := range runners {
		if !tunnel.IsMirror(r.req.Mechanism) {
			continue
		}
		for _, sess := range r.sessions() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if list, err := sess.List(ctx); err == nil {
					r.recordMirror(sess, list)
				}
			}()
		}
	}
	wg.Wait()
}

// sessions are the runner's live sessions, one per active pod.
func (r *runner) sessions() []*client.Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*client.Session
	for _, pc := range r.pods {
		if pc.session != nil {
			out = append(out, pc.session)
		}
	}
	return out
}

// recordMirror keeps the counts an agent's list (seen through sess) gives
// for this runner's mirror on that pod: over all its ports (the agent
// knows each by its agent name).
func (r *runner) recordMirror(sess *client.Session, list []tunnel.InterceptInfo) {
	if !tunnel.IsMirror(r.req.Mechanism) {
		return
	}
	names := r.req.AgentNames()
	var sum MirrorCounts
	found := false
	for _, ic := range list {
		if !ic.Yours || !slices.Contains(names, ic.Name) {
			continue
		}
		found = true
		sum.Copied += ic.MirrorCopied
		sum.Dropped += ic.MirrorDropped
	}
	if !found {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, pc := range r.pods {
		if pc.session == sess {
			pc.mirror.record(sess, sum)
			pc.state.Mirror = pc.mirror.total()
		}
	}
}

// mirrorTotal adds up a mirror's counts over its pods; nil for intercepts.
func mirrorTotal(mechanism string, pods []PodState) *MirrorCounts {
	if !tunnel.IsMirror(mechanism) {
		return nil
	}
	total := &MirrorCounts{}
	for _, p := range pods {
		if p.Mirror != nil {
			total.Copied += p.Mirror.Copied
			total.Dropped += p.Mirror.Dropped
		}
	}
	return total
}

// podMirror keeps one pod's counts across sessions: an agent counts from
// the mirror's creation, and a reconnect creates it anew.
type podMirror struct {
	sess       *client.Session
	base, last MirrorCounts
}

func (m *podMirror) record(sess *client.Session, c MirrorCounts) {
	if m.sess != sess {
		m.base.Copied += m.last.Copied
		m.base.Dropped += m.last.Dropped
		m.sess = sess
	}
	m.last = c
}

func (m *podMirror) total() *MirrorCounts {
	return &MirrorCounts{Copied: m.base.Copied + m.last.Copied, Dropped: m.base.Dropped + m.last.Dropped}
}
