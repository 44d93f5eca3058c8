package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/detour-dev/detour/internal/annotations"
)

// replaceReport decides whether a replaced pod's agent asks for the app
// back (annotations.ReplaceReport): once it has held no intercept for the
// grace period, counted from the last intercept's end, or — before any
// intercept — from the agent's start with at least
// annotations.ReplaceStartAllowance, so that a slow rollout does not
// restore pods before their client had the chance to connect.
func replaceReport(now, started, lastHeld time.Time, held, everHeld bool, grace time.Duration) annotations.ReplaceReport {
	from, wait := lastHeld, grace
	if !everHeld {
		from, wait = started, max(grace, annotations.ReplaceStartAllowance)
	}
	r := annotations.ReplaceReport{Held: held, GraceSeconds: wait.Seconds()}
	if held || grace <= 0 {
		return r
	}
	unheld := max(now.Sub(from), 0)
	r.UnheldSeconds = unheld.Seconds()
	r.Restore = unheld >= wait
	return r
}

// serveReplace answers annotations.ReplacePath on the health port: the
// webhook's restorer reads it (docs/architecture.md, "Replace mode"). An
// agent of a pod that is not replaced answers with Restore false.
func (a *Agent) serveReplace(w http.ResponseWriter, _ *http.Request) {
	held, ever, last := a.reg.heldState()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(replaceReport(time.Now(), a.started, last, held, ever, a.cfg.ReplacedGrace))
}

// Sleep is the replaced app container's process: it does nothing until
// ctx ends (SIGTERM from the kubelet), then exits 0.
func Sleep(ctx context.Context, stderr io.Writer) error {
	fmt.Fprintln(stderr, "detour: this container is replaced by `detour intercept --replace`; its traffic goes to a workstation. It comes back on leave.")
	<-ctx.Done()
	return nil
}

// InstallSleeper copies the running binary to dst, executable by any
// user: the replace init container puts it where the app container runs
// it as its sleeper.
func InstallSleeper(dst string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the agent binary: %w", err)
	}
	in, err := os.Open(self)
	if err != nil {
		return fmt.Errorf("open the agent binary: %w", err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".sleeper-*")
	if err != nil {
		return fmt.Errorf("install the sleeper in %s: %w", filepath.Dir(dst), err)
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return fmt.Errorf("copy the agent binary to %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("install the sleeper: %w", err)
	}
	return nil
}
