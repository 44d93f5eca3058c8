package wsecho

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestEcho(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(http.Handler) *httptest.Server
	}{
		{"ws", httptest.NewServer},
		{"wss", httptest.NewTLSServer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHandler("backend-a")
			gotHeader := make(chan string, 1)
			srv := tc.start(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				gotHeader <- r.Header.Get("X-Route")
				h.ServeHTTP(w, r)
			}))
			defer srv.Close()
			defer h.Close()

			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws" // ws:// or wss://
			msgs := []string{"one", "", "three", strings.Repeat("x", 100_000)}
			replies, err := Echo(ctx, url, http.Header{"X-Route": {"canary"}}, msgs)
			if err != nil {
				t.Fatalf("Echo: %v", err)
			}
			want := make([]string, len(msgs))
			for i, m := range msgs {
				want[i] = "backend-a " + m
			}
			if !slices.Equal(replies, want) {
				t.Errorf("replies = %.60q, want %.60q", replies, want)
			}
			if got := <-gotHeader; got != "canary" {
				t.Errorf("server saw X-Route %q, want %q", got, "canary")
			}
		})
	}
}

func TestUpgradeHeaderAndBinary(t *testing.T) {
	h := NewHandler("b")
	srv := httptest.NewServer(h)
	defer srv.Close()
	defer h.Close()

	conn, resp, err := websocket.DefaultDialer.DialContext(t.Context(), "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := resp.Header.Get(TagHeader); got != "b" {
		t.Errorf("upgrade %s = %q, want %q", TagHeader, got, "b")
	}
	if err := conn.WriteMessage(websocket.BinaryMessage, []byte{0, 1}); err != nil {
		t.Fatal(err)
	}
	typ, msg, err := conn.ReadMessage()
	if err != nil || typ != websocket.BinaryMessage || string(msg) != "b \x00\x01" {
		t.Errorf("ReadMessage = %d, %q, %v; want binary %q", typ, msg, err, "b \x00\x01")
	}
}

func TestNotUpgrade(t *testing.T) {
	h := NewHandler("b")
	srv := httptest.NewServer(h)
	defer srv.Close()
	defer h.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plain GET status = %d, want 400", resp.StatusCode)
	}
}

// TestClose checks that Close ends a live connection and refuses new ones.
func TestClose(t *testing.T) {
	h := NewHandler("b")
	srv := httptest.NewServer(h)
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http")

	conn, _, err := websocket.DefaultDialer.DialContext(t.Context(), url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.WriteMessage(websocket.TextMessage, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := conn.ReadMessage(); err != nil { // the handler is tracking conn now
		t.Fatal(err)
	}

	closed := make(chan struct{})
	go func() { h.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := conn.ReadMessage(); err == nil {
		t.Error("connection still open after Close")
	}

	_, resp, err := websocket.DefaultDialer.DialContext(t.Context(), url, nil)
	if err == nil {
		t.Fatal("dial after Close succeeded")
	}
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("dial after Close: %v, want status 503", err)
	}
}

func TestEchoContext(t *testing.T) {
	// A server that upgrades and then never answers.
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := websocket.Upgrader{}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		<-release
	}))
	defer srv.Close()
	defer close(release)

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := Echo(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil, []string{"x"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Echo against a silent server: %v, want context.DeadlineExceeded", err)
	}
}
