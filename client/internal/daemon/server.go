package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/internal/version"
	"github.com/detour-dev/detour/tunnel"
	"go.uber.org/zap"
)

// Daemon holds the intercepts of one user.
type Daemon struct {
	log      *zap.Logger
	clientID string
	secret   string // proves to agents that a reconnect is ours; never shown
	started  time.Time

	mu         sync.Mutex
	intercepts map[string]*runner
	creating   map[string]InterceptRequest // the creates in progress, by name
	quitting   bool
	quit       chan struct{}
	quitOnce   sync.Once

	spares *spares[*client.Session] // sessions of left intercepts, kept for the next (spare.go)
}

// New prepares a daemon; linger is how long it keeps the session of an
// intercept that was left for the next intercept of the pod (0: not at
// all; SessionLinger reads the user's setting).
func New(log *zap.Logger, linger time.Duration) *Daemon {
	host, _ := os.Hostname()
	return &Daemon{
		spares:     newSpares[*client.Session](linger),
		log:        log,
		clientID:   fmt.Sprintf("%s-%d-%d", host, os.Getpid(), time.Now().UnixNano()),
		secret:     client.NewSecret(),
		started:    time.Now(),
		intercepts: map[string]*runner{},
		creating:   map[string]InterceptRequest{},
		quit:       make(chan struct{}),
	}
}

// Listen creates the unix socket, readable by its user only. A stale
// socket from a daemon that died is replaced; a live one is an error.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("a detour daemon is already running on %s", path)
	}
	if err := privateDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	_ = os.Remove(path)
	// The socket is created 0600 from the start (no window with the umask's mode).
	var ln net.Listener
	var err error
	withUmask(0o077, func() { ln, err = net.Listen("unix", path) })
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// Run serves the API on ln until ctx is cancelled or a client asks it to
// quit; either way every intercept is left cleanly first.
func (d *Daemon) Run(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/intercepts", d.handleCreate)
	mux.HandleFunc("DELETE /v1/intercepts/{name}", d.handleLeave)
	mux.HandleFunc("GET /v1/status", d.handleStatus)
	mux.HandleFunc("POST /v1/quit", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"result": "quitting"})
		d.quitOnce.Do(func() { close(d.quit) })
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	d.log.Info("daemon serving", zap.String("socket", ln.Addr().String()), zap.String("version", version.Version))
	var err error
	select {
	case <-ctx.Done():
	case <-d.quit:
	case err = <-errc:
	}
	d.spares.closeAll() // and keeps none of the sessions leaveAll ends
	d.leaveAll()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
	d.log.Info("daemon stopped")
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (d *Daemon) leaveAll() {
	d.mu.Lock()
	d.quitting = true
	runners := make([]*runner, 0, len(d.intercepts))
	for name, r := range d.intercepts {
		runners = append(runners, r)
		delete(d.intercepts, name)
	}
	d.mu.Unlock()
	var wg sync.WaitGroup
	for _, r := range runners {
		wg.Add(1)
		go func() { defer wg.Done(); r.stop() }()
	}
	wg.Wait()
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, ErrorReply{Error: err.Error()})
}

func kubeClients(kubeconfig, kubeContext string) (*rest.Config, kubernetes.Interface, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext}).ClientConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	return cfg, cs, nil
}

func (d *Daemon) handleCreate(w http.ResponseWriter, r *http.Request) {
	var req InterceptRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("decode request: %w", err))
		return
	}
	old, code, err := d.reserve(req)
	if err != nil {
		writeError(w, code, err)
		return
	}
	defer d.unreserve(req.Name)
	if old != nil {
		// Re-creating an intercept (e.g. on another port of the workload)
		// replaces it: the old one is left first — keeping the workload
		// replaced when the new one replaces it the same way.
		old.keepReplace.Store(d.sharesReplace(old, &req))
		old.stop()
	}
	run, st, code, err := d.startIntercept(r.Context(), req)
	if err != nil {
		writeError(w, code, err)
		return
	}
	if err := d.adopt(req.Name, run); err != nil {
		run.stop() // the daemon stops: every replace it holds is given back
		writeError(w, http.StatusServiceUnavailable, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// reserve marks req's name as being created, so no other create of it
// runs at the same time, and takes the intercept held under that name out
// of the daemon's (the caller stops it). On refusal it returns the HTTP
// status to answer with.
func (d *Daemon) reserve(req InterceptRequest) (old *runner, code int, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.quitting {
		return nil, http.StatusServiceUnavailable, fmt.Errorf("the daemon is stopping: retry in a moment")
	}
	if _, busy := d.creating[req.Name]; busy {
		return nil, http.StatusConflict, fmt.Errorf("intercept %q is being created by another command right now", req.Name)
	}
	if err := validRequest(req, d.requestsLocked()); err != nil {
		return nil, http.StatusBadRequest, err
	}
	d.creating[req.Name] = req
	old = d.intercepts[req.Name]
	delete(d.intercepts, req.Name)
	return old, 0, nil
}

// unreserve ends the create of name that reserve began.
func (d *Daemon) unreserve(name string) {
	d.mu.Lock()
	delete(d.creating, name)
	d.mu.Unlock()
}

// startIntercept starts req's intercept and returns it with its status
// once it is active: the agent holds it, the Service has been checked
// and, when asked, the workload's environment read. The CLI giving up
// (Ctrl-C) cancels ctx. On failure nothing is left behind, and the HTTP
// status to answer with is returned.
func (d *Daemon) startIntercept(ctx context.Context, req InterceptRequest) (*runner, InterceptStatus, int, error) {
	cfg, cs, err := kubeClients(req.Kubeconfig, req.Context)
	if err != nil {
		return nil, InterceptStatus{}, http.StatusBadRequest, err
	}
	timeout := time.Duration(req.TimeoutSec) * time.Second
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	run := newRunner(context.Background(), req, identity{d.clientID, d.secret}, cfg, cs, d.log)
	run.spares = d.spares
	service := run.fetchService(ctx)
	if err := run.start(ctx, timeout); err != nil {
		run.keepReplace.Store(d.sharesReplace(run, nil))
		run.stop()
		return nil, InterceptStatus{}, http.StatusConflict, err
	}
	check := run.checkService(ctx, timeout, service)
	if check != "" {
		run.log.Warn("service check", zap.String("result", check))
	}
	st := run.status()
	st.ServiceCheck = check
	if req.WantEnv {
		envCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		env, err := run.env(envCtx)
		cancel()
		if err != nil {
			run.keepReplace.Store(d.sharesReplace(run, nil))
			run.stop()
			return nil, InterceptStatus{}, http.StatusBadGateway, err
		}
		st.Env = env
	}
	return run, st, 0, nil
}

// adopt makes run the daemon's intercept name, unless the daemon stopped
// meanwhile (then the caller stops run).
func (d *Daemon) adopt(name string, run *runner) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.quitting {
		return fmt.Errorf("the daemon stopped while the intercept was being created")
	}
	d.intercepts[name] = run
	return nil
}

// sharesReplace says whether another intercept keeps run's workload
// replaced the same way — one this daemon holds, or next, the request
// that re-creates run (nil if none) — so that run's end must not give the
// workload its app back.
func (d *Daemon) sharesReplace(run *runner, next *InterceptRequest) bool {
	same := func(req InterceptRequest) bool {
		return run.req.Replace != "" && req.Replace == run.req.Replace && req.Namespace == run.req.Namespace && req.Workload == run.req.Workload
	}
	if next != nil && same(*next) {
		return true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, other := range d.intercepts {
		if other != run && same(other.req) {
			return true
		}
	}
	return false
}

// requestsLocked are the requests of the intercepts held or being
// created now (d.mu held).
func (d *Daemon) requestsLocked() []InterceptRequest {
	reqs := make([]InterceptRequest, 0, len(d.intercepts)+len(d.creating))
	for _, r := range d.intercepts {
		reqs = append(reqs, r.req)
	}
	for _, req := range d.creating {
		reqs = append(reqs, req)
	}
	return reqs
}

// validRequest checks what the daemon relies on in a request: at least one
// port, no app port twice, and agent names (AgentName) that are valid and
// no other intercept of held uses (an agent would take the second create
// of a name for a move of the first). An intercept held under req's own
// name does not count: req replaces it.
func validRequest(req InterceptRequest, held []InterceptRequest) error {
	if len(req.Ports) == 0 {
		// A CLI of an earlier release sends its one port outside ports[].
		return fmt.Errorf("intercept %q: no port to intercept (a detour CLI of another release than this daemon's, %s? detour quit stops the daemon; the next command starts its own)", req.Name, version.Version)
	}
	mine := map[string]bool{}
	apps := map[uint16]bool{}
	for i, name := range req.AgentNames() {
		if err := tunnel.ValidateName(name); err != nil {
			return fmt.Errorf("intercept %q, port %d: %w", req.Name, req.Ports[i].Port, err)
		}
		if apps[req.Ports[i].AppPort] {
			return fmt.Errorf("intercept %q: container port %d twice", req.Name, req.Ports[i].AppPort)
		}
		apps[req.Ports[i].AppPort] = true
		mine[name] = true
	}
	for _, other := range held {
		if other.Name == req.Name {
			continue
		}
		for _, name := range other.AgentNames() {
			if mine[name] {
				return fmt.Errorf("intercept %q would reach the agents under the name %q, which intercept %q already uses there (a port after the first is NAME.PORT): choose another name", req.Name, name, other.Name)
			}
		}
	}
	return nil
}

func (d *Daemon) handleLeave(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	d.mu.Lock()
	run := d.intercepts[name]
	delete(d.intercepts, name)
	names := make([]string, 0, len(d.intercepts))
	for n := range d.intercepts {
		names = append(names, n)
	}
	d.mu.Unlock()
	if run == nil {
		sort.Strings(names)
		msg := "there are no active intercepts"
		if len(names) > 0 {
			msg = fmt.Sprintf("active intercepts: %v", names)
		}
		writeError(w, http.StatusNotFound, fmt.Errorf("no intercept named %q (%s)", name, msg))
		return
	}
	run.keepReplace.Store(d.sharesReplace(run, nil))
	run.stop()
	writeJSON(w, http.StatusOK, map[string]string{"left": name})
}

func (d *Daemon) handleStatus(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	runners := make([]*runner, 0, len(d.intercepts))
	for _, run := range d.intercepts {
		runners = append(runners, run)
	}
	d.mu.Unlock()
	refreshMirrors(r.Context(), runners)
	st := Status{Version: version.Version, PID: os.Getpid(), Started: d.started, Intercepts: []InterceptStatus{}}
	for _, run := range runners {
		st.Intercepts = append(st.Intercepts, run.status())
	}
	sort.Slice(st.Intercepts, func(i, j int) bool { return st.Intercepts[i].Name < st.Intercepts[j].Name })
	writeJSON(w, http.StatusOK, st)
}
