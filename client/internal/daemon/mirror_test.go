package daemon

import (
	"testing"

	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/tunnel"
)

// TestMirrorCountsSurviveReconnects: an agent counts a mirror's copies
// from its creation, and a reconnect creates it anew; the pod's counts go
// on from where they were. Another's mirror of the same name is not ours.
func TestMirrorCountsSurviveReconnects(t *testing.T) {
	r := &runner{req: InterceptRequest{Name: "tap", Ports: []PortRequest{{AppPort: 8080}}, Mechanism: tunnel.MechanismHTTPMirror}, pods: map[string]*podConn{}}
	first, second := &client.Session{}, &client.Session{}
	pc := &podConn{session: first}
	r.pods["web-1"] = pc
	list := func(copied, dropped uint64) []tunnel.InterceptInfo {
		return []tunnel.InterceptInfo{
			{Name: "tap", Port: 8080, Mechanism: tunnel.MechanismHTTPMirror, Holder: "carol", MirrorCopied: 100, MirrorDropped: 100},
			{Name: "tap", Port: 8080, Mechanism: tunnel.MechanismHTTPMirror, Yours: true, MirrorCopied: copied, MirrorDropped: dropped},
		}
	}
	r.recordMirror(first, list(5, 1))
	r.recordMirror(first, list(7, 2))
	pc.session = second // reconnected: the agent starts over
	r.recordMirror(second, list(1, 0))
	got := mirrorTotal(r.req.Mechanism, []PodState{pc.state})
	if got.Copied != 8 || got.Dropped != 2 {
		t.Fatalf("counts after a reconnect: %+v, want 8 copied, 2 dropped", *got)
	}
	if mirrorTotal(tunnel.MechanismHTTP, []PodState{pc.state}) != nil {
		t.Fatal("an intercept has mirror counts")
	}
}
