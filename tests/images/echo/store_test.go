package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeGateway answers /v3/kv/range and /v3/kv/put as etcd's gateway does.
func fakeGateway(t *testing.T) *httptest.Server {
	data := map[string][]byte{}
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req kv
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, `{"error":"bad json"}`, http.StatusBadRequest)
			return
		}
		switch r.URL.Path {
		case "/v3/kv/put":
			data[string(req.Key)] = req.Value
			fmt.Fprint(w, `{"header":{"revision":"2"}}`)
		case "/v3/kv/range":
			v, ok := data[string(req.Key)]
			if !ok {
				fmt.Fprint(w, `{"header":{"revision":"2"}}`)
				return
			}
			b, _ := json.Marshal(map[string]any{"kvs": []kv{{Key: req.Key, Value: v}}, "count": "1"})
			w.Write(b)
		default:
			http.NotFound(w, r)
		}
	}))
}

func TestStoreAnswer(t *testing.T) {
	gw := fakeGateway(t)
	defer gw.Close()
	srv := httptest.NewServer(handler("pod-a", newStore(gw.URL, "greeting")))
	defer srv.Close()
	if got := getBody(t, srv.URL); got != `hello from pod-a; store says: (nothing under "greeting" yet)`+"\n" {
		t.Errorf("before put: %q", got)
	}
	if err := putRetrying(gw.URL, "greeting", "hi there", time.Second); err != nil {
		t.Fatal(err)
	}
	if got := getBody(t, srv.URL); got != "hello from pod-a; store says: hi there\n" {
		t.Errorf("after put: %q", got)
	}
	gw.Close()
	if got := getBody(t, srv.URL); !strings.HasPrefix(got, "hello from pod-a; store says: error: ") {
		t.Errorf("store down: %q", got)
	}
}

// TestStoreRealEtcd talks to the etcd binary the local cluster builds
// (skipped when it is not cached), on loopback.
func TestStoreRealEtcd(t *testing.T) {
	bin := filepath.Join(envOr("DETOUR_CACHE", "/var/cache/detour"), "etcd-v3.6.16", "etcd")
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no cached etcd (go run ./tests/cluster build makes it): %v", err)
	}
	client, peer := freeAddr(t), freeAddr(t)
	cmd := exec.Command(bin, "--name", "t", "--data-dir", t.TempDir(),
		"--listen-client-urls", "http://"+client, "--advertise-client-urls", "http://"+client,
		"--listen-peer-urls", "http://"+peer, "--initial-advertise-peer-urls", "http://"+peer,
		"--initial-cluster", "t=http://"+peer)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	url := "http://" + client
	if err := putRetrying(url, "greeting", "from a real etcd", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := newStore(url, "greeting").says(context.Background()); got != "from a real etcd" {
		t.Errorf("range: %q", got)
	}
	if got := newStore(url, "nosuch").says(context.Background()); got != `(nothing under "nosuch" yet)` {
		t.Errorf("missing key: %q", got)
	}
}

func getBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
