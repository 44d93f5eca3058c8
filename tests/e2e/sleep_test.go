//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/detour-dev/detour/tests/internal/images"
)

// TestSleepingWorkstation: a workstation that goes silent (here: its
// daemon stopped with SIGSTOP, as a laptop's suspend would freeze it) loses
// its intercept to the agents' keep-alive bound, the app gets the traffic
// back meanwhile, and on wake status says what happened and resume
// re-creates it; it is not taken back behind the user's back.
func TestSleepingWorkstation(t *testing.T) {
	ctx := context.Background()
	cs := clientset(t, restConfig(t))
	u := newUser(t)
	u.must("install", "--image", images.Detour)
	ns := createNamespace(ctx, t, cs, "sleep")
	svc := deployWeb(ctx, t, cs, ns, "web", 1)
	url := fmt.Sprintf("http://%s:80/", svc.Spec.ClusterIP)
	eventually(t, time.Minute, "the Service answers", func() bool { return strings.HasPrefix(who(url), "hello from web-") })

	local := localServer(t, "workstation")
	name := "web-" + ns
	u.must("intercept", "web", "-n", ns, "--port", fmt.Sprintf("%d:http", local))
	if !waitForSteady(t, url, "workstation", 5, kubeProxyLag) {
		t.Fatal("the intercept never took the traffic")
	}

	type status struct {
		Daemon     struct{ PID int } `json:"daemon"`
		Intercepts []struct {
			Name    string `json:"name"`
			State   string `json:"state"`
			Dropped string `json:"dropped"`
		} `json:"intercepts"`
	}
	read := func() status {
		var st status
		out := u.must("status", "-o", "json").stdout
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status -o json: %v\n%s", err, out)
		}
		return st
	}
	pid := read().Daemon.PID
	if pid == 0 {
		t.Fatal("status reports no daemon pid")
	}

	// Asleep: the agents must give the traffic back within their bound
	// (keep-alive 5 s + write timeout 10 s), without the workstation's help.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	resumed := false
	defer func() {
		if !resumed {
			syscall.Kill(pid, syscall.SIGCONT)
		}
	}()
	deadline := stopped.Add(40 * time.Second)
	for last := who(url); !strings.HasPrefix(last, "hello from web-"); last = who(url) {
		if time.Now().After(deadline) {
			t.Fatalf("the app did not get the traffic back within 40 s of the workstation going silent (last: %q)", last)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("traffic back at the app %s after the workstation went silent", time.Since(stopped).Round(100*time.Millisecond))
	time.Sleep(3 * time.Second) // asleep a little longer, as laptops are
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed = true

	// Awake: status says so, and the traffic stays at the app.
	var st status
	eventually(t, 20*time.Second, "status shows the intercept dropped", func() bool {
		st = read()
		return len(st.Intercepts) == 1 && st.Intercepts[0].State == "dropped"
	})
	if d := st.Intercepts[0].Dropped; !strings.Contains(d, "silent for") || !strings.Contains(d, "gave the traffic back") {
		t.Fatalf("dropped reason %q does not say what happened", d)
	}
	table := u.must("status").stdout
	if !strings.Contains(table, "DROPPED") || !strings.Contains(table, "detour resume "+name) {
		t.Fatalf("status does not offer to re-create:\n%s", table)
	}
	for i := 0; i < 10; i++ {
		if got := who(url); !strings.HasPrefix(got, "hello from web-") {
			t.Fatalf("after wake, request %d reached %q: a dropped intercept must not come back by itself", i, got)
		}
		time.Sleep(300 * time.Millisecond)
	}

	// resume re-creates it with the same settings.
	r := u.must("resume", name)
	if !strings.Contains(r.stdout, fmt.Sprintf("Intercept %q is active", name)) {
		t.Fatalf("resume:\n%s", r)
	}
	if !waitForSteady(t, url, "workstation", 5, kubeProxyLag) {
		t.Fatal("resume did not bring the traffic back")
	}
	if st := read(); len(st.Intercepts) != 1 || st.Intercepts[0].State != "active" {
		t.Fatalf("after resume: %+v", st)
	}
	if r := u.run("resume", name); r.code == 0 || !strings.Contains(r.stderr, "not dropped") {
		t.Fatalf("resuming an active intercept: want a refusal:\n%s", r)
	}
	u.must("leave", name)
}
