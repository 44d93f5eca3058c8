package agent

import "testing"

// TestH2PeerHold: what a peer's connection is acknowledged for follows
// what the relay holds of its bytes, within h2PeerLend and the pool, and
// every byte is acknowledged once: when lent, or when it leaves.
func TestH2PeerHold(t *testing.T) {
	const mib = 1 << 20
	type step struct {
		hold, leave      int64 // bytes arriving into, leaving the relay's buffers
		lent, unacked    int64 // after the step
		outstanding, avl int64
	}
	for _, tc := range []struct {
		name  string
		pool  int64
		steps []step
	}{
		{"lent as held, back as it leaves", 16 * mib, []step{
			{hold: mib, lent: mib, unacked: mib, outstanding: mib, avl: 15 * mib},
			{leave: mib / 2, lent: mib / 2, unacked: mib, outstanding: mib, avl: 15*mib + mib/2},
			{leave: mib / 2, lent: 0, unacked: mib, outstanding: mib, avl: 16 * mib},
		}},
		{"over the peer's bound: the rest waits for writes", 16 * mib, []step{
			{hold: 5 * mib, lent: 4 * mib, unacked: 4 * mib, outstanding: 5 * mib, avl: 12 * mib},
			{leave: mib, lent: 4 * mib, unacked: 5 * mib, outstanding: 5 * mib, avl: 12 * mib},
			{leave: 4 * mib, lent: 0, unacked: 5 * mib, outstanding: 5 * mib, avl: 16 * mib},
		}},
		{"a pool that is short lends what it has", mib, []step{
			{hold: 3 * mib, lent: mib, unacked: mib, outstanding: 3 * mib, avl: 0},
			{leave: 3 * mib, lent: 0, unacked: 3 * mib, outstanding: 3 * mib, avl: mib},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &h2Peer{pool: newH2LendPool(tc.pool)}
			for i, s := range tc.steps {
				if s.hold > 0 {
					p.hold(s.hold)
				}
				if s.leave > 0 {
					p.unacked += s.leave // written or dropped: counted first
					p.hold(-s.leave)
				}
				// outstanding here counts the acknowledgments not yet sent too
				if p.lent != s.lent || p.unacked != s.unacked || p.outstanding() != s.outstanding || p.pool.avail.Load() != s.avl {
					t.Errorf("step %d: lent %d, unacked %d, outstanding %d, pool %d; want %d, %d, %d, %d",
						i, p.lent, p.unacked, p.outstanding(), p.pool.avail.Load(), s.lent, s.unacked, s.outstanding, s.avl)
				}
			}
			p.release()
			if got := p.pool.avail.Load(); got != tc.pool {
				t.Errorf("after release the pool has %d, want %d", got, tc.pool)
			}
		})
	}
}
