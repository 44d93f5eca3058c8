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

// TestPodDialerTriesSPDYThenWebSocket: a port-forward is opened over plain
// SPDY first (measured faster); when something on the way refuses the
// SPDY upgrade, over WebSocket.
func TestPodDialerTriesSPDYThenWebSocket(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+strings.ToLower(r.Header.Get("Upgrade")))
		mu.Unlock()
		http.Error(w, "this proxy passes no upgrade", http.StatusBadRequest)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL + "/api/v1/namespaces/ns/pods/p/portforward")
	d, err := podDialer(&rest.Config{Host: srv.URL}, u)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Dial(portforward.PortForwardProtocolV1Name); err == nil {
		t.Fatal("a server refusing every upgrade: no error")
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"POST spdy/3.1", "GET websocket"}; !slices.Equal(seen, want) {
		t.Fatalf("upgrades tried %q, want %q", seen, want)
	}
}

// TestPodDialerDoesNotRetryAForbiddenUpgrade: RBAC's 403 would refuse the
// WebSocket upgrade too (both need create on pods/portforward): one try,
// and the error is the forbidden one.
func TestPodDialerDoesNotRetryAForbiddenUpgrade(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"pods \"p\" is forbidden: User \"dev\" cannot create resource \"pods/portforward\"","reason":"Forbidden","code":403}`))
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL + "/api/v1/namespaces/ns/pods/p/portforward")
	d, err := podDialer(&rest.Config{Host: srv.URL}, u)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = d.Dial(portforward.PortForwardProtocolV1Name)
	if err == nil || !forbidden(err) {
		t.Fatalf("err %v, want a forbidden one", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 {
		t.Fatalf("tried %q, want one SPDY attempt", seen)
	}
}

func TestPodDialerWebSocketFirstOnRequest(t *testing.T) {
	t.Setenv(TransportEnv, "websocket")
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+strings.ToLower(r.Header.Get("Upgrade")))
		mu.Unlock()
		http.Error(w, "no upgrades", http.StatusBadRequest)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL + "/api/v1/namespaces/ns/pods/p/portforward")
	d, err := podDialer(&rest.Config{Host: srv.URL}, u)
	if err != nil {
		t.Fatal(err)
	}
	_, _, _ = d.Dial(portforward.PortForwardProtocolV1Name)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) == 0 || seen[0] != "GET websocket" {
		t.Fatalf("upgrades tried %q, want WebSocket first", seen)
	}
}
