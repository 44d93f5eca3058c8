//go:build linux

package nsexec

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if IsChild() {
		os.Exit(ChildMain())
	}
	if os.Getenv(ttyHelperEnv) != "" {
		os.Exit(ttyHelper())
	}
	if os.Getenv(signalCounterEnv) != "" {
		os.Exit(signalCounter())
	}
	if os.Getenv(loopbackProbeEnv) != "" {
		os.Exit(loopbackProbe())
	}
	os.Exit(m.Run())
}

// skipWithoutNamespaces skips where this machine cannot make the
// namespaces at all (the proxy fallback's tests cover those).
func startOrSkip(t *testing.T, opts Options) *Namespace {
	t.Helper()
	n, err := Start(opts)
	if errors.Is(err, ErrNoUserNamespaces) || errors.Is(err, ErrNoTUN) {
		t.Skipf("no namespaces here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

func TestCommandRunsInItsOwnNamespaces(t *testing.T) {
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2)")
	}
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	hostResolv, _ := os.ReadFile("/etc/resolv.conf")
	script := `{ ip -o addr show tun0; ip route; cat /etc/resolv.conf; echo processes=$(ls /proc | grep -c '^[0-9]'); } >` + out.Name() + ` 2>&1; exit 7`
	n := startOrSkip(t, Options{
		Command: []string{"sh", "-c", script},
		Env:     []string{"PATH=" + os.Getenv("PATH")},
		Files:   map[string][]byte{"/etc/resolv.conf": []byte("nameserver 198.18.0.2\nsearch shop.svc.cluster.local\n")},
	})
	if n.TUN == nil {
		t.Fatal("no TUN")
	}
	code, err := n.Wait()
	if err != nil || code != 7 {
		t.Fatalf("exit %d, %v", code, err)
	}
	b, _ := os.ReadFile(out.Name())
	got := string(b)
	for _, want := range []string{Addr4 + "/32", "default dev tun0", "nameserver 198.18.0.2", "search shop.svc.cluster.local"} {
		if !strings.Contains(got, want) {
			t.Errorf("namespace output lacks %q:\n%s", want, got)
		}
	}
	// The PID namespace holds nothing else than the first process, sh, the
	// $(…) subshell, ls and grep — grep only when it was forked before ls
	// read /proc (CI saw 4): not the workstation's hundreds.
	var procs int
	if i := strings.Index(got, "processes="); i < 0 {
		t.Errorf("no process count:\n%s", got)
	} else if fmt.Sscanf(got[i:], "processes=%d", &procs); procs < 4 || procs > 5 {
		t.Errorf("%d processes in the PID namespace, want 4 or 5: the first one, sh, the subshell, ls (and grep)", procs)
	}
	after, _ := os.ReadFile("/etc/resolv.conf")
	if !bytes.Equal(hostResolv, after) {
		t.Fatal("the workstation's /etc/resolv.conf changed")
	}
	if _, err := os.Stat(n.dir); !os.IsNotExist(err) {
		t.Fatalf("private directory left behind: %v", err)
	}
}

// TestTreesAppearAtTheirRealPaths: a ConfigMap at /etc/config (which does
// not exist here), the service-account token under /var/run/secrets (a
// symlink to /run on Debian), and a subPath file beside /etc's own files:
// inside, all readable with their modes, read-only, /etc's own entries
// still there; outside, nothing was created.
func TestTreesAppearAtTheirRealPaths(t *testing.T) {
	for _, p := range []string{"/etc/config", "/var/run/secrets/kubernetes.io", "/etc/detour-app.conf"} {
		if _, err := os.Stat(p); err == nil {
			t.Skipf("%s exists on this machine", p)
		}
	}
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Dir(out.Name()), 0o777)
	os.Chmod(out.Name(), 0o666)
	script := `{ cat /etc/config/app.yaml; stat -c '%a' /etc/config/app.yaml; cat /var/run/secrets/kubernetes.io/serviceaccount/token; stat -c '%a' /var/run/secrets/kubernetes.io/serviceaccount/token;
cat /etc/detour-app.conf; test -e /etc/passwd && echo passwd-kept; touch /etc/config/new 2>/dev/null || echo read-only; cat /etc/config/conf/nested.yaml; } >` + out.Name() + ` 2>&1; sleep 1`
	n := startOrSkip(t, Options{
		Command: []string{"sh", "-c", script},
		Env:     []string{"PATH=" + os.Getenv("PATH")},
		Trees: []Tree{
			{Target: "/etc/config", Files: map[string]TreeFile{"app.yaml": {Data: []byte("greeting: hi\n"), Mode: 0o644}, "conf/nested.yaml": {Data: []byte("nested: yes\n"), Mode: 0o644}}},
			{Target: "/etc/detour-app.conf", SingleFile: true, Files: map[string]TreeFile{"detour-app.conf": {Data: []byte("sub=path\n"), Mode: 0o644}}},
			{Target: "/var/run/secrets/kubernetes.io/serviceaccount", Files: map[string]TreeFile{"token": {Data: []byte("eyJ.token\n"), Mode: 0o600}}},
		},
	})
	// While the command runs, no copy of the files is left in detour's
	// private directory (a SIGKILL of detour would leave it there): the
	// mounts hold the only ones.
	var staged []string
	err = filepath.WalkDir(n.dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			staged = append(staged, p)
		}
		return err
	})
	if err != nil || len(staged) > 0 {
		t.Errorf("while the command runs, detour's directory holds %v (%v)", staged, err)
	}
	if code, err := n.Wait(); err != nil || code != 0 {
		b, _ := os.ReadFile(out.Name())
		t.Fatalf("exit %d, %v:\n%s", code, err, b)
	}
	b, _ := os.ReadFile(out.Name())
	want := "greeting: hi\n644\neyJ.token\n600\nsub=path\npasswd-kept\nread-only\nnested: yes\n"
	if string(b) != want {
		t.Fatalf("inside the namespace:\n%s\nwant:\n%s", b, want)
	}
	for _, p := range []string{"/etc/config", "/run/secrets/kubernetes.io", "/etc/detour-app.conf"} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s was created on the workstation", p)
		}
	}
}

// TestTreesRootless runs the test above as nobody, with /dev/net/tun open
// to all as standard distributions ship it.
func TestTreesRootless(t *testing.T) { runAsNobody(t, "TestTreesAppearAtTheirRealPaths") }

// runAsNobody runs the named test in a copy of this binary as nobody,
// with /dev/net/tun opened up as distributions ship it (0666).
func runAsNobody(t *testing.T, test string) {
	if os.Getuid() != 0 {
		t.Skip("runs " + test + " as nobody: needs root to switch")
	}
	dir, err := os.MkdirTemp("", "nsexec-rootless-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil || os.Chown(tmp, 65534, 65534) != nil {
		t.Fatal("tmp for nobody:", err)
	}
	self, _ := os.Executable()
	b, _ := os.ReadFile(self)
	bin := filepath.Join(dir, "nsexec.test")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat("/dev/net/tun")
	if err != nil {
		t.Skip("no /dev/net/tun")
	}
	os.Chmod("/dev/net/tun", 0o666)
	defer os.Chmod("/dev/net/tun", fi.Mode().Perm())
	cmd := exec.Command(bin, "-test.run", "^"+test+"$", "-test.v")
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "TMPDIR=" + tmp}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
}

// ttyHelperEnv makes the test binary the detour side of a Ctrl-C test: it
// starts a command in a namespace and passes on every SIGINT it gets
// itself, as the CLI does.
const ttyHelperEnv = "NSEXEC_TTY_HELPER"

// signalCounterEnv makes the test binary the command: it prints one line
// per SIGINT delivered to it (a shell's trap would merge two that arrive
// while it waits for a child), for 3 s.
const signalCounterEnv = "NSEXEC_SIGNAL_COUNTER"

func signalCounter() int {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, os.Interrupt)
	fmt.Println("ready")
	end := time.After(3 * time.Second)
	for {
		select {
		case <-sigs:
			fmt.Println("got-INT")
		case <-end:
			fmt.Println("done")
			return 0
		}
	}
}

func ttyHelper() int {
	self, _ := os.Executable()
	n, err := Start(Options{Command: []string{self, "-test.run=^$"}, Env: []string{"PATH=" + os.Getenv("PATH"), signalCounterEnv + "=1"}})
	if err != nil {
		fmt.Println("start:", err)
		return 1
	}
	defer n.Close()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt)
	for {
		select {
		case s := <-sigs:
			_ = n.Signal(s.(syscall.Signal))
		case <-n.Done():
			code, _ := n.Wait()
			return code
		}
	}
}

// TestCtrlCReachesTheCommandOnce types Ctrl-C into a real terminal (a
// pty from script(1)) while a command runs in its namespace: the command
// gets SIGINT exactly once — the terminal sends it to the command's
// foreground process group only, so detour has nothing to pass on twice.
func TestCtrlCReachesTheCommandOnce(t *testing.T) {
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("needs script(1) from util-linux for a pty")
	}
	self, _ := os.Executable()
	cmd := exec.Command("script", "-qfec", self+" -test.run=^$", "/dev/null")
	cmd.Env = append(os.Environ(), ttyHelperEnv+"=1")
	stdin, _ := cmd.StdinPipe()
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "ready") {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("command not ready: %q", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := stdin.Write([]byte{0x03}); err != nil { // Ctrl-C
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v: %q", err, out.String())
	}
	got := out.String()
	if n := strings.Count(got, "got-INT"); n != 1 || !strings.Contains(got, "done") {
		t.Fatalf("SIGINT reached the command %d times (want 1), output %q", n, got)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestTreesUpdateWhileTheCommandRuns: new contents for trees already
// shown (a refreshed token) reach the running command at the same paths —
// a directory's file replaced, a file gone; a single-file bind keeps its
// first contents, as a subPath mount does in the pod — and the trees stay
// read-only.
func TestTreesUpdateWhileTheCommandRuns(t *testing.T) {
	for _, p := range []string{"/etc/config", "/etc/detour-app.conf"} {
		if _, err := os.Stat(p); err == nil {
			t.Skipf("%s exists on this machine", p)
		}
	}
	// The directory changes; the file mounted alone (subPath) does not,
	// as in the pod (TestUpdatesLeaveSubPathFilesAlone).
	script := `i=0; while [ "$(cat /etc/config/token)" != "v2" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
{ cat /etc/config/token; echo; cat /etc/detour-app.conf; test -e /etc/config/old && echo old-kept; touch /etc/config/new 2>/dev/null || echo read-only; stat -c '%a' /etc/config/token; }`
	trees := func(v string, old bool) []Tree {
		dir := Tree{Target: "/etc/config", Files: map[string]TreeFile{"token": {Data: []byte(v), Mode: 0o600}}}
		if old {
			dir.Files["old"] = TreeFile{Data: []byte("x"), Mode: 0o644}
		}
		return []Tree{dir, {Target: "/etc/detour-app.conf", SingleFile: true, Files: map[string]TreeFile{"detour-app.conf": {Data: []byte("conf=" + v + "\n"), Mode: 0o644}}}}
	}
	if got, want := updateWhileRunning(t, script, trees("v1", true), trees("v2", false)), "v2\nconf=v1\nread-only\n600\n"; got != want {
		t.Fatalf("after the update the command saw:\n%s\nwant:\n%s", got, want)
	}
}

// updateWhileRunning runs script with trees before shown, gives them the
// contents of after 200 ms in, and returns what script wrote on stdout
// and stderr (to a file: the command's own are the test's).
func updateWhileRunning(t *testing.T, script string, before, after []Tree) string {
	t.Helper()
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Dir(out.Name()), 0o777)
	os.Chmod(out.Name(), 0o666)
	script = "{ " + script + "\n} >" + out.Name() + " 2>&1"
	n := startOrSkip(t, Options{Command: []string{"sh", "-c", script}, Env: []string{"PATH=" + os.Getenv("PATH")}, Trees: before})
	time.Sleep(200 * time.Millisecond) // the command is reading before
	if err := n.UpdateTrees(after); err != nil {
		t.Fatal(err)
	}
	if code, err := n.Wait(); err != nil || code != 0 {
		t.Fatalf("exit %d, %v", code, err)
	}
	b, _ := os.ReadFile(out.Name())
	return string(b)
}

func TestTreesUpdateRootless(t *testing.T) { runAsNobody(t, "TestTreesUpdateWhileTheCommandRuns") }

// TestUpdatesRacingTheEndAreNotErrors: an update sent while the command
// ends is not an error. The first process closes its control socket a
// moment before detour has reaped it; an update in that moment failed
// with "sendmsg: broken pipe" (seen in CI as a second failure note).
func TestUpdatesRacingTheEndAreNotErrors(t *testing.T) {
	if _, err := os.Stat("/etc/detour-race"); err == nil {
		t.Skip("/etc/detour-race exists on this machine")
	}
	tree := []Tree{{Target: "/etc/detour-race", Files: map[string]TreeFile{"token": {Data: []byte("v"), Mode: 0o600}}}}
	for round := 0; round < 3; round++ {
		n := startOrSkip(t, Options{Command: []string{"sh", "-c", "sleep 0.0$((RANDOM % 5))"}, Env: []string{"PATH=" + os.Getenv("PATH")}, Trees: tree})
		for ended := false; !ended; {
			select {
			case <-n.Done():
				ended = true
			default:
			}
			if err := n.UpdateTrees(tree); err != nil {
				t.Fatalf("round %d: an update while the command ends: %v", round, err)
			}
		}
		n.Close()
	}
}

// TestUpdatesLeaveSubPathFilesAlone: a file mounted alone (a subPath
// mount) inside a directory tree is another mount point in that tree. A
// refresh of the directory must go round it — it removed the files gone
// from the tree in order and gave up at the mount point ("device or
// resource busy"), leaving the rest behind on every refresh — and, as the
// kubelet does for subPath mounts, the file itself keeps what it showed
// first: a rewrite in place (no rename over a mount) could be read half
// done.
func TestUpdatesLeaveSubPathFilesAlone(t *testing.T) {
	if _, err := os.Stat("/etc/detour-sub"); err == nil {
		t.Skip("/etc/detour-sub exists on this machine")
	}
	script := `i=0; while [ "$(cat /etc/detour-sub/token)" != "v2" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; sleep 0.2
cat /etc/detour-sub/token; echo; cat /etc/detour-sub/extra.conf; ls /etc/detour-sub`
	trees := func(v string, old bool) []Tree {
		dir := Tree{Target: "/etc/detour-sub", Files: map[string]TreeFile{"token": {Data: []byte(v), Mode: 0o600}}}
		if old {
			dir.Files["zz-old"] = TreeFile{Data: []byte("x"), Mode: 0o644}
		}
		return []Tree{dir, {Target: "/etc/detour-sub/extra.conf", SingleFile: true, Files: map[string]TreeFile{"extra.conf": {Data: []byte("extra=" + v + "\n"), Mode: 0o644}}}}
	}
	if got, want := updateWhileRunning(t, script, trees("v1", true), trees("v2", false)), "v2\nextra=v1\nextra.conf\ntoken\n"; got != want {
		t.Fatalf("after the update the command saw:\n%s\nwant:\n%s", got, want)
	}
}
