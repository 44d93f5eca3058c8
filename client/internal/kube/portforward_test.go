package kube

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
)

// refusingServer answers every upgrade with refuse and records each
// attempt as "METHOD upgrade"; dial dials it with podDialer.
type refusingServer struct {
	mu   sync.Mutex
	seen []string
}

func (rs *refusingServer) dial(t *testing.T, refuse http.HandlerFunc) error {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rs.mu.Lock()
		rs.seen = append(rs.seen, r.Method+" "+strings.ToLower(r.Header.Get("Upgrade")))
		rs.mu.Unlock()
		refuse(w, r)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL + "/api/v1/namespaces/ns/pods/p/portforward")
	d, err := podDialer(&rest.Config{Host: srv.URL}, u)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = d.Dial(portforward.PortForwardProtocolV1Name)
	return err
}

func (rs *refusingServer) tried() []string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return slices.Clone(rs.seen)
}

func noUpgrades(w http.ResponseWriter, _ *http.Request) {
	http.Error(w, "this proxy passes no upgrade", http.StatusBadRequest)
}

// TestPodDialerTriesSPDYThenWebSocket: a port-forward is opened over plain
// SPDY first (measured faster); when something on the way refuses the
// SPDY upgrade, over WebSocket.
func TestPodDialerTriesSPDYThenWebSocket(t *testing.T) {
	var rs refusingServer
	if err := rs.dial(t, noUpgrades); err == nil {
		t.Fatal("a server refusing every upgrade: no error")
	}
	if want := []string{"POST spdy/3.1", "GET websocket"}; !slices.Equal(rs.tried(), want) {
		t.Fatalf("upgrades tried %q, want %q", rs.tried(), want)
	}
}

// TestPodDialerDoesNotRetryAForbiddenUpgrade: RBAC's 403 would refuse the
// WebSocket upgrade too (both need create on pods/portforward): one try,
// and the error is the forbidden one.
func TestPodDialerDoesNotRetryAForbiddenUpgrade(t *testing.T) {
	var rs refusingServer
	err := rs.dial(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"pods \"p\" is forbidden: User \"dev\" cannot create resource \"pods/portforward\"","reason":"Forbidden","code":403}`))
	})
	if err == nil || !forbidden(err) {
		t.Fatalf("err %v, want a forbidden one", err)
	}
	if len(rs.tried()) != 1 {
		t.Fatalf("tried %q, want one SPDY attempt", rs.tried())
	}
}

// TestPodDialerKeepsBothRefusals: when the fallback fails too, the error
// says why each way failed; it was the second one's alone, so a proxy
// that refused SPDY for a reason of its own hid that reason.
func TestPodDialerKeepsBothRefusals(t *testing.T) {
	for _, first := range []string{"", "websocket"} {
		t.Setenv(TransportEnv, first)
		var rs refusingServer
		err := rs.dial(t, func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "refused-"+strings.ToLower(r.Header.Get("Upgrade")), http.StatusBadRequest)
		})
		if err == nil {
			t.Fatal("a server refusing every upgrade: no error")
		}
		for _, want := range []string{"SPDY", "refused-spdy/3.1", "WebSocket", "refused-websocket"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s first: the error %q does not say %q", cmp.Or(first, "spdy"), err, want)
			}
		}
	}
}

func TestPodDialerWebSocketFirstOnRequest(t *testing.T) {
	t.Setenv(TransportEnv, "websocket")
	var rs refusingServer
	_ = rs.dial(t, noUpgrades)
	if got := rs.tried(); len(got) == 0 || got[0] != "GET websocket" {
		t.Fatalf("upgrades tried %q, want WebSocket first", got)
	}
}

// barrierConn is a port-forward connection whose CreateStream answers
// only once want streams are being created at the same time (or after 5 s
// with an error): the kubelet's reply is a round trip away.
type barrierConn struct {
	httpstream.Connection
	want    int
	mu      sync.Mutex
	waiting int
	all     chan struct{}
	created []http.Header
	streams []*fakeStream // those created
	fail    string        // the stream type whose creation fails
}

func (c *barrierConn) CreateStream(h http.Header) (httpstream.Stream, error) {
	c.mu.Lock()
	c.created = append(c.created, h)
	if c.waiting++; c.waiting == c.want {
		close(c.all)
	}
	c.mu.Unlock()
	select {
	case <-c.all:
	case <-time.After(5 * time.Second):
		return nil, fmt.Errorf("%s stream: the other stream was not asked for meanwhile", h.Get(corev1.StreamType))
	}
	if h.Get(corev1.StreamType) == c.fail {
		return nil, errors.New("refused")
	}
	st := &fakeStream{h: h}
	c.mu.Lock()
	c.streams = append(c.streams, st)
	c.mu.Unlock()
	return st, nil
}

type fakeStream struct {
	httpstream.Stream
	h             http.Header
	closed, reset bool
}

func (s *fakeStream) Close() error         { s.closed = true; return nil }
func (s *fakeStream) Reset() error         { s.reset = true; return nil }
func (s *fakeStream) Headers() http.Header { return s.h }

// TestPortForwardStreamsAreAskedForTogether: the error and data streams
// of a port-forward are created at once (one round trip through the API
// server, kubelet and runtime, not two), as one request: same request ID
// and port, one of each type; the error stream is closed for writing.
func TestPortForwardStreamsAreAskedForTogether(t *testing.T) {
	c := &barrierConn{want: 2, all: make(chan struct{})}
	errorStream, dataStream, err := openStreams(c, 9900)
	if err != nil {
		t.Fatal(err)
	}
	e, d := errorStream.(*fakeStream), dataStream.(*fakeStream)
	if e.h.Get(corev1.StreamType) != corev1.StreamTypeError || d.h.Get(corev1.StreamType) != corev1.StreamTypeData {
		t.Fatalf("stream types %q and %q", e.h.Get(corev1.StreamType), d.h.Get(corev1.StreamType))
	}
	for _, h := range c.created {
		if h.Get(corev1.PortHeader) != "9900" || h.Get(corev1.PortForwardRequestIDHeader) != c.created[0].Get(corev1.PortForwardRequestIDHeader) {
			t.Fatalf("headers %v and %v are not one request to port 9900", c.created[0], h)
		}
	}
	if !e.closed || d.closed {
		t.Fatalf("error stream closed %v, data stream closed %v: want only the error stream's write side closed", e.closed, d.closed)
	}
}

// TestPortForwardStreamFailureLeavesNothingOpen: when one of the pair
// cannot be created, the other is reset, and the error names which failed.
func TestPortForwardStreamFailureLeavesNothingOpen(t *testing.T) {
	for _, failing := range []string{corev1.StreamTypeError, corev1.StreamTypeData} {
		c := &barrierConn{want: 2, all: make(chan struct{}), fail: failing}
		if _, _, err := openStreams(c, 9900); err == nil || !strings.Contains(err.Error(), "create "+failing+" stream") {
			t.Fatalf("%s failing: err = %v", failing, err)
		}
		if len(c.streams) != 1 || !c.streams[0].reset {
			t.Fatalf("%s failing: the other stream was not reset (%d created)", failing, len(c.streams))
		}
	}
}
