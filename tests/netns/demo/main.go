// Command demo shows detour's data path end to end in real network
// namespaces, before any Kubernetes: a pod with an app and the detour agent
// (nftables redirect applied by `detour-agent init`), a cluster client that
// calls the pod IP, and this process as your workstation, reaching the agent
// through the pod's loopback the way a port-forward does.
//
// Run it as root with `make demo`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/tests/internal/nsworld"
	"go.uber.org/zap"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	agentBin := flag.String("agent", "bin/detour-agent", "the detour-agent binary (make build)")
	hold := flag.Duration("hold", 0, "keep the intercept active this long before leaving (try curl from the client netns)")
	flag.Parse()
	if err := run(ctx, *agentBin, *hold); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func say(format string, a ...any) { fmt.Printf("\n==> "+format+"\n", a...) }

func run(ctx context.Context, agentBin string, hold time.Duration) error {
	if err := nsworld.Available(); err != nil {
		return err
	}
	if _, err := os.Stat(agentBin); err != nil {
		return fmt.Errorf("agent binary %s: %w (run make build)", agentBin, err)
	}
	say("Building a pod network namespace and a cluster-client namespace (veth, addresses only inside them)")
	w, err := nsworld.New()
	if err != nil {
		return err
	}
	defer func() {
		say("Tearing down the namespaces")
		if err := w.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "teardown:", err)
		}
	}()
	fmt.Printf("    pod %s at %s, cluster client %s at %s\n", w.Pod, w.PodIP, w.Client, w.ClientIP)

	say("Starting the app in the pod on :8080")
	appLn, err := nsworld.Listen(w.Pod, ":8080")
	if err != nil {
		return err
	}
	app := &http.Server{Handler: reply("hello from the app in the pod"), ReadHeaderTimeout: 5 * time.Second}
	go app.Serve(appLn)
	defer app.Close()

	say("detour-agent init: nftables redirect of :8080 to the agent's :15001 (in the pod netns)")
	out, err := nsworld.Command(ctx, w.Pod, agentBin, "init", "--ports", "8080", "--agent-port", "15001").CombinedOutput()
	fmt.Print(indent(string(out)))
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}

	say("detour-agent run: tunnel on 127.0.0.1:9900 inside the pod only")
	agent, err := nsworld.Start(w.Pod, nil, agentBin, "run", "--redirect-addr", ":15001", "--redirect-ports", "8080",
		"--tunnel-addr", "127.0.0.1:9900", "--health-addr", ":9901", "--metrics-addr", "127.0.0.1:9902", "--log-level", "warn")
	if err != nil {
		return err
	}
	defer agent.Stop(5 * time.Second)
	if err := agent.WaitHTTP(w.Pod, "http://127.0.0.1:9901/readyz", 10*time.Second); err != nil {
		return err
	}

	call := func() {
		c := &http.Client{Transport: &http.Transport{DialContext: nsworld.Dialer(w.Client), DisableKeepAlives: true}, Timeout: 3 * time.Second}
		resp, err := c.Get(fmt.Sprintf("http://%s:8080/", w.PodIP))
		if err != nil {
			fmt.Printf("    cluster client: GET http://%s:8080/ → error %v\n", w.PodIP, err)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		fmt.Printf("    cluster client: GET http://%s:8080/ → %q\n", w.PodIP, strings.TrimSpace(string(b)))
	}
	say("No intercept: the cluster client reaches the app (through the agent's passthrough)")
	call()

	say("Your workstation runs its own version on 127.0.0.1 (host namespace)")
	localLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	local := &http.Server{Handler: reply("hello from YOUR WORKSTATION (under your debugger)"), ReadHeaderTimeout: 5 * time.Second}
	go local.Serve(localLn)
	defer local.Close()
	fmt.Printf("    workstation server on %s\n", localLn.Addr())

	say("The tunnel port is not reachable from the cluster (only through a port-forward)")
	if c, err := nsworld.Dial(ctx, w.Client, fmt.Sprintf("%s:9900", w.PodIP)); err != nil {
		fmt.Printf("    cluster client → %s:9900: %v\n", w.PodIP, err)
	} else {
		c.Close()
		return errors.New("the tunnel port answered at the pod IP")
	}

	say("Intercept: connect like a port-forward (127.0.0.1:9900 inside the pod) and take port 8080")
	conn, err := nsworld.Dial(ctx, w.Pod, "127.0.0.1:9900")
	if err != nil {
		return err
	}
	s, err := client.Open(ctx, conn, client.Options{ClientID: "demo", User: client.DefaultUser(), Log: zap.NewNop()})
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Printf("    connected to agent %s serving ports %v\n", s.Agent().AgentVersion, s.Agent().Ports)
	list, err := s.CreateIntercept(ctx, client.InterceptSpec{Name: "hello", Port: 8080, LocalAddr: localLn.Addr().String()})
	if err != nil {
		return err
	}
	fmt.Printf("    intercept %q on port %d held by %s\n", list[0].Name, list[0].Port, list[0].Holder)
	call()
	call()

	say("A colleague tries to take the same port globally")
	conn2, err := nsworld.Dial(ctx, w.Pod, "127.0.0.1:9900")
	if err != nil {
		return err
	}
	bob, err := client.Open(ctx, conn2, client.Options{ClientID: "bob", User: "bob@desk", Log: zap.NewNop()})
	if err != nil {
		return err
	}
	_, err = bob.CreateIntercept(ctx, client.InterceptSpec{Name: "bobs", Port: 8080, LocalAddr: "127.0.0.1:1"})
	fmt.Printf("    refused: %v\n", err)
	bob.Close()

	if hold > 0 {
		say("Holding the intercept for %s: try `ip netns exec %s curl http://%s:8080/`", hold, w.Client, w.PodIP)
		select {
		case <-time.After(hold):
		case <-ctx.Done():
		}
	}

	say("Leave: the app answers again")
	if _, err := s.RemoveIntercept(ctx, "hello"); err != nil {
		return err
	}
	call()
	say("Done: the traffic went to your workstation and back, with nftables, the agent and the tunnel all real.")
	return nil
}

func reply(text string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, text) })
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}
