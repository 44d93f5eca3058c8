package agent_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/tunnel"
)

// probeFront connects to the agent's front as a prober through the Service
// would and returns what comes back.
func probeFront(t *testing.T, addr, token string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	io.WriteString(c, tunnel.ProbePrefix+token+"\n")
	b := make([]byte, len(tunnel.ProbeAnswer))
	n, _ := io.ReadFull(c, b)
	return string(b[:n])
}

// TestProbesAreAnsweredNotRouted: an agent armed by the intercept's holder
// answers probe lines itself; every other connection is routed as always,
// bytes intact (a client that waits for the server is delayed at most
// ProbePeekWait); no one without an intercept on the port can arm it; an
// expired token is just bytes.
func TestProbesAreAnsweredNotRouted(t *testing.T) {
	w := startAgent(t, nil)
	laptop := lineServer(t, "127.0.0.1:0", "workstation")
	ctx := context.Background()
	alice, _ := openClient(t, w, "alice@laptop", tunnel.Config{})
	if _, err := alice.CreateIntercept(ctx, client.InterceptSpec{Name: "hello", Port: w.appPort, LocalAddr: laptop.Addr().String()}); err != nil {
		t.Fatal(err)
	}
	token := client.NewProbeToken()
	if err := alice.ExpectProbe(ctx, w.appPort, token, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := probeFront(t, w.front, token); got != tunnel.ProbeAnswer {
		t.Fatalf("probe answered %q, want %q", got, tunnel.ProbeAnswer)
	}
	if got := probeFront(t, w.front, client.NewProbeToken()); got == tunnel.ProbeAnswer {
		t.Fatal("a probe with another token was answered as ours")
	}
	// A client that speaks first is routed with its bytes (the
	// workstation's server echoes them after its name line).
	c, err := net.Dial("tcp", w.front)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(2 * time.Second))
	io.WriteString(c, "GET /\n")
	want := "workstation\nGET /\n"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
		t.Fatalf("a client speaking first got %q (%v), want %q", got, err, want)
	}
	c.Close()
	// A client that waits for the server: routed after the peek.
	start := time.Now()
	if got := whoAnswers(t, w.front); got != "workstation" {
		t.Fatalf("a client waiting for the server got %q", got)
	}
	if d := time.Since(start); d > tunnel.ProbePeekWait+time.Second {
		t.Fatalf("a client waiting for the server waited %s", d)
	}

	bob, _ := openClient(t, w, "bob@desk", tunnel.Config{})
	if err := bob.ExpectProbe(ctx, w.appPort, client.NewProbeToken(), time.Second); !errors.Is(err, tunnel.ErrInterceptNotFound) {
		t.Fatalf("bob arming alice's port: %v, want ErrInterceptNotFound", err)
	}
	if err := alice.ExpectProbe(ctx, w.appPort, "not-hex", time.Second); !errors.Is(err, tunnel.ErrBadRequest) {
		t.Fatalf("a bad token: %v, want ErrBadRequest", err)
	}

	short := client.NewProbeToken()
	if err := alice.ExpectProbe(ctx, w.appPort, short, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	eventually(t, 2*time.Second, "the expired token routed like any bytes", func() bool {
		return probeFront(t, w.front, short) != tunnel.ProbeAnswer
	})
}
