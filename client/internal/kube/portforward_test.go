package kube

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

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

func TestPodDialerWebSocketFirstOnRequest(t *testing.T) {
	t.Setenv(TransportEnv, "websocket")
	var rs refusingServer
	_ = rs.dial(t, noUpgrades)
	if got := rs.tried(); len(got) == 0 || got[0] != "GET websocket" {
		t.Fatalf("upgrades tried %q, want WebSocket first", got)
	}
}
