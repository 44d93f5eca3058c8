//go:build linux

package nsexec

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables/expr"
)

// loopbackProbeEnv makes the test binary the command of the loopback
// test: "A,B,C" are the workstation's open port, a port both sides
// listen on, and a port closed on both. It writes what it saw to
// $NSEXEC_PROBE_OUT, then waits for SIGUSR1 (or 10 s).
const loopbackProbeEnv = "NSEXEC_LOOPBACK_PROBE"

func loopbackProbe() int {
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	ports := strings.Split(os.Getenv(loopbackProbeEnv), ",")
	var out strings.Builder
	ln, err := net.Listen("tcp", "127.0.0.1:"+ports[1])
	if err != nil {
		fmt.Fprintf(&out, "listen: %v\n", err)
	} else {
		go serveLine(ln, "namespace")
	}
	for i, p := range ports {
		fmt.Fprintf(&out, "%d=%s\n", i, readLine("127.0.0.1:"+p))
	}
	_ = os.WriteFile(os.Getenv("NSEXEC_PROBE_OUT"), []byte(out.String()), 0o644)
	select {
	case <-usr1:
	case <-time.After(10 * time.Second):
	}
	return 0
}

func serveLine(ln net.Listener, line string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		fmt.Fprintln(c, line)
		c.Close()
	}
}

// readLine connects and reads one line, or names what went wrong:
// "refused", or "closed" for a connection reset or ended without a line
// (the reset may come before connect returns: SO_ERROR then holds it).
func readLine(addr string) string {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "closed"
	case err != nil:
		return "dial-error"
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	s, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) {
			return "closed"
		}
		return "read-error"
	}
	return strings.TrimSpace(s)
}

func listenLine(t *testing.T, line string) int {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go serveLine(ln, line)
	return ln.Addr().(*net.TCPAddr).Port
}

// TestLoopbackFallsThroughToTheWorkstation: in the namespace, 127.0.0.1
// ports the command does not listen on are the workstation's (a local
// database keeps working); a port it listens on is its own; a port closed
// on both sides fails at once; and detour's own dials into the namespace
// (intercepted connections) never fall through — that would loop.
func TestLoopbackFallsThroughToTheWorkstation(t *testing.T) {
	open := listenLine(t, "workstation")
	shadowed := listenLine(t, "workstation-shadowed")
	closedLn, _ := net.Listen("tcp4", "127.0.0.1:0")
	closed := closedLn.Addr().(*net.TCPAddr).Port
	closedLn.Close()
	inbound := listenLine(t, "workstation-inbound")

	outFile := filepath.Join(t.TempDir(), "probe")
	if f, err := os.Create(outFile); err == nil {
		f.Close()
		os.Chmod(outFile, 0o666)
		os.Chmod(filepath.Dir(outFile), 0o777)
	}
	self, _ := os.Executable()
	n := startOrSkip(t, Options{
		Command: []string{self, "-test.run=^$"},
		Env: []string{"PATH=" + os.Getenv("PATH"), "NSEXEC_PROBE_OUT=" + outFile,
			loopbackProbeEnv + "=" + fmt.Sprintf("%d,%d,%d", open, shadowed, closed)},
	})
	if len(n.Notes) > 0 {
		t.Fatalf("notes: %q", n.Notes)
	}
	var got string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if b, _ := os.ReadFile(outFile); len(b) > 0 {
			got = string(b)
			break
		}
	}
	want := "0=workstation\n1=namespace\n2=closed\n"
	if got != want {
		t.Errorf("the command saw\n%s\nwant\n%s", got, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := n.DialLoopback(ctx, uint16(inbound))
	if err == nil {
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		t.Errorf("a dial into the namespace's port %d, which nothing there listens on, reached %q", inbound, strings.TrimSpace(line))
	} else if !errors.Is(err, ErrNothingListens) {
		t.Errorf("dial into the namespace: %v, want ErrNothingListens", err)
	}
	_ = n.Signal(syscall.SIGUSR1)
	if code, err := n.Wait(); code != 0 || err != nil {
		t.Fatalf("exit %d, %v", code, err)
	}
}

func TestLoopbackFallsThroughRootless(t *testing.T) {
	runAsNobody(t, "TestLoopbackFallsThroughToTheWorkstation")
}

// TestLoopbackRules pins the rules' order and what each compares: a
// socket the kernel finds (a listener, or the connection a packet belongs
// to) always wins over the fall-through.
func TestLoopbackRules(t *testing.T) {
	rules := loopbackRules(40000)
	if len(rules) != 4 {
		t.Fatalf("%d rules, want 4", len(rules))
	}
	for i, r := range rules {
		if v, ok := r[len(r)-1].(*expr.Verdict); !ok || v.Kind != expr.VerdictAccept {
			t.Errorf("rule %d does not end in accept: %#v", i, r[len(r)-1])
		}
	}
	if c := rules[0][1].(*expr.Cmp); c.Op != expr.CmpOpNeq || string(c.Data[:3]) != "lo\x00" || len(c.Data) != 16 {
		t.Errorf("rule 0 is not iifname != lo: %#v", c)
	}
	if s, ok := rules[2][2].(*expr.Socket); !ok || s.Key != expr.SocketKeyTransparent {
		t.Errorf("rule 2 is not a socket lookup: %#v", rules[2][2])
	}
	tp := rules[3]
	if !reflect.DeepEqual(tp[3].(*expr.Cmp).Data, []byte{127, 0, 0, 1}) || tp[2].(*expr.Payload).Offset != 16 {
		t.Errorf("rule 3 does not match ip daddr 127.0.0.1: %#v %#v", tp[2], tp[3])
	}
	if port := tp[5].(*expr.Immediate).Data; strconv.Itoa(int(port[0])<<8|int(port[1])) != "40000" {
		t.Errorf("tproxy port bytes %v, want 40000 big-endian", port)
	}
	if _, ok := tp[6].(*expr.TProxy); !ok {
		t.Errorf("rule 3 has no tproxy: %#v", tp[6])
	}
}

// TestRemoteErrorSaysItOnce: the child's error crosses the control socket
// as text; rebuilt, it reads the same (the sentinel's text once, not
// twice) and errors.Is still finds the sentinel.
func TestRemoteErrorSaysItOnce(t *testing.T) {
	child := tunError(syscall.EACCES)
	got := remoteError(ctrlMsg{Kind: "error", Error: child.Error(), Cause: causeName(child)})
	if got.Error() != child.Error() || !errors.Is(got, ErrNoTUN) {
		t.Fatalf("rebuilt %q (is ErrNoTUN: %v), the child said %q", got, errors.Is(got, ErrNoTUN), child)
	}
}
