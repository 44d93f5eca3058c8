package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/client/internal/kube"
	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/tunnel"
	"go.uber.org/zap"
)

// resyncInterval is how often a runner re-lists the workload's pods even
// when its watch reports nothing: a safety net for a watch that silently
// stalls. Watch events trigger a re-list at once.
const resyncInterval = 10 * time.Second

// errFatal marks an agent's refusal that retrying cannot fix (the port is
// held by someone else, the agent does not serve it): the intercept ends.
var errFatal = errors.New("intercept refused")

type runner struct {
	req     InterceptRequest
	id      identity
	created time.Time
	log     *zap.Logger
	cfg     *rest.Config
	cs      kubernetes.Interface

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	pods      map[string]*podConn
	fatal     error
	noAgent   []string // running pods created without the agent
	dropped   string   // why the intercept was dropped, once it was
	droppedAt time.Time
	change    chan struct{} // signalled when a pod's state changes
	toPod     []net.Listener
	// keepReplace: the intercept is re-created with the same replace, so
	// stopping this runner must not give the workload its app back.
	keepReplace atomic.Bool
	// spares: the daemon's sessions of intercepts left (nil: none kept).
	spares *spares[*client.Session]
}

type podConn struct {
	state   PodState
	cancel  context.CancelFunc
	session *client.Session
	// terminating: the pod is being deleted. Its session is kept until the
	// agent ends it: kube-proxy may still send the pod connections for a
	// moment, and they belong to the workstation, not to the dying app.
	terminating bool
	mirror      podMirror // a mirror's counts, across reconnects
}

// identity is who the daemon is to agents: a label and the secret that
// proves it.
type identity struct{ clientID, secret string }

func newRunner(parent context.Context, req InterceptRequest, id identity, cfg *rest.Config, cs kubernetes.Interface, log *zap.Logger) *runner {
	ctx, cancel := context.WithCancel(parent)
	return &runner{
		req: req, id: id, created: time.Now(), cfg: cfg, cs: cs,
		log: log.With(zap.String("intercept", req.Name), zap.String("workload", req.Workload)),
		ctx: ctx, cancel: cancel,
		pods: map[string]*podConn{}, change: make(chan struct{}, 1),
	}
}

func (r *runner) notify() {
	select {
	case r.change <- struct{}{}:
	default:
	}
}

// start begins following the workload's pods and waits until every pod
// that has a ready agent now holds the intercept, or the agent refuses it.
func (r *runner) start(ctx context.Context, timeout time.Duration) error {
	pods, err := r.listPods()
	if err != nil {
		return err
	}
	if len(pods) == 0 {
		return fmt.Errorf("%s has no pod with a ready agent", r.req.Workload)
	}
	for _, p := range pods {
		r.ensurePod(p.Name)
	}
	r.wg.Add(1)
	go r.follow()
	for _, port := range r.req.ToPod {
		if err := r.forwardToPod(port); err != nil {
			return err
		}
	}
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		fatal, active, total := r.fatal, 0, len(r.pods)
		for _, pc := range r.pods {
			if pc.state.State == "active" {
				active++
			}
		}
		r.mu.Unlock()
		if fatal != nil {
			return fatal
		}
		if active == total && total > 0 {
			return nil
		}
		select {
		case <-r.change:
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("%d of %d pods active after %s (last errors: %s)", active, total, timeout, r.lastErrors())
		}
	}
}

func (r *runner) lastErrors() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := ""
	for name, pc := range r.pods {
		if pc.state.LastError != "" {
			s += name + ": " + pc.state.LastError + "; "
		}
	}
	if s == "" {
		return "none"
	}
	return s
}

func (r *runner) listPods() ([]corev1.Pod, error) {
	ready, _, _, err := r.listPodsByAgent()
	return ready, err
}

// listPodsByAgent lists the workload's running pods: those whose agent is
// ready, and those that run without an agent at all (created while the
// webhook was down: its failurePolicy is Ignore).
func (r *runner) listPodsByAgent() (ready []corev1.Pod, noAgent []string, terminating map[string]bool, err error) {
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	pods, err := r.cs.CoreV1().Pods(r.req.Namespace).List(ctx, metav1.ListOptions{LabelSelector: r.req.Selector})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("list pods of %s: %w", r.req.Workload, err)
	}
	terminating = map[string]bool{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			terminating[p.Name] = true
			continue
		}
		if p.Status.Phase != corev1.PodRunning {
			continue
		}
		hasAgent := false
		for _, c := range p.Status.ContainerStatuses {
			if c.Name == annotations.AgentContainerName {
				hasAgent = true
				if c.Ready {
					ready = append(ready, p)
				}
			}
		}
		if !hasAgent {
			noAgent = append(noAgent, p.Name)
		}
	}
	sort.Strings(noAgent)
	return ready, noAgent, terminating, nil
}

// follow keeps one connection per ready pod until the runner stops: it
// watches the workload's pods and reconciles on every event (a pod became
// ready, was replaced, the workload scaled), and every resyncInterval.
func (r *runner) follow() {
	defer r.wg.Done()
	resync := time.NewTicker(resyncInterval)
	defer resync.Stop()
	events := r.watchPods()
	for {
		select {
		case <-r.ctx.Done():
			return
		case _, ok := <-events:
			if !ok {
				// The watch ended (apiserver restart, timeout): start another.
				select {
				case <-r.ctx.Done():
					return
				case <-time.After(time.Second):
				}
				events = r.watchPods()
				continue
			}
		case <-resync.C:
		}
		r.reconcile()
	}
}

// watchPods returns the events of a watch on the workload's pods, or a
// closed channel if the watch cannot start (follow retries).
func (r *runner) watchPods() <-chan watch.Event {
	w, err := r.cs.CoreV1().Pods(r.req.Namespace).Watch(r.ctx, metav1.ListOptions{LabelSelector: r.req.Selector})
	if err != nil {
		r.log.Warn("cannot watch pods; retrying", zap.Error(err))
		closed := make(chan watch.Event)
		close(closed)
		return closed
	}
	context.AfterFunc(r.ctx, w.Stop)
	return w.ResultChan()
}

func (r *runner) reconcile() {
	pods, noAgent, terminating, err := r.listPodsByAgent()
	if err != nil {
		r.log.Warn("cannot list pods; keeping current connections", zap.Error(err))
		return
	}
	r.mu.Lock()
	if len(noAgent) > 0 && len(r.noAgent) == 0 {
		r.log.Warn("pods without the detour agent: their traffic cannot be intercepted", zap.Strings("pods", noAgent))
	}
	r.noAgent = noAgent
	r.mu.Unlock()
	seen := map[string]bool{}
	for _, p := range pods {
		seen[p.Name] = true
		r.ensurePod(p.Name)
	}
	r.mu.Lock()
	for name, pc := range r.pods {
		switch {
		case seen[name] || r.dropped != "":
		case terminating[name] && pc.session != nil:
			if !pc.terminating {
				r.log.Info("pod terminating; its session is kept until its agent ends it", zap.String("pod", name))
				pc.terminating = true
				pc.state.State, pc.state.Since = "terminating", time.Now()
			}
		default:
			r.log.Info("pod gone or not ready; dropping its connection", zap.String("pod", name))
			pc.cancel()
			delete(r.pods, name)
		}
	}
	r.mu.Unlock()
	r.notify()
}

func (r *runner) ensurePod(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.pods[name]; ok || r.dropped != "" {
		return
	}
	ctx, cancel := context.WithCancel(r.ctx)
	pc := &podConn{state: PodState{Pod: name, State: "connecting", Since: time.Now()}, cancel: cancel}
	r.pods[name] = pc
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.holdPod(ctx, name, pc)
	}()
}

func (r *runner) setState(pc *podConn, state string, err error, sess *client.Session) {
	r.mu.Lock()
	if pc.state.State != state {
		pc.state.Since = time.Now()
	}
	pc.state.State = state
	if err != nil {
		pc.state.LastError = err.Error()
	}
	if state == "reconnecting" {
		pc.state.Reconnects++
	}
	pc.session = sess
	if sess != nil {
		pc.state.AgentVersion = sess.Agent().AgentVersion
	}
	r.mu.Unlock()
	r.notify()
}

// A lost session is re-dialled after firstBackoff, doubling up to
// maxBackoff while it keeps failing.
const (
	firstBackoff = 200 * time.Millisecond
	maxBackoff   = 5 * time.Second
)

// holdPod keeps the intercept alive on one pod: dial, hello, create; on a
// lost session, retry with backoff; on stop, remove and close.
func (r *runner) holdPod(ctx context.Context, pod string, pc *podConn) {
	log := r.log.With(zap.String("pod", pod))
	backoff := firstBackoff
	for {
		sess, err := r.connect(ctx, pod)
		if err == nil {
			backoff = firstBackoff
			r.setState(pc, "active", nil, sess)
			log.Info("intercept active on pod")
			switch silent := r.hold(ctx, sess); {
			case ctx.Err() != nil:
				r.leavePod(log, pod, sess)
				return
			case silent > 0:
				// The agent dropped us while this workstation was asleep (or
				// the daemon stopped): someone else may hold the port now, and
				// the user may not expect traffic any more. Say so; do not
				// take it back behind their back.
				reason := fmt.Sprintf("this workstation was silent for %s (asleep or stopped) and the agents gave the traffic back to the app", silent.Round(time.Second))
				log.Warn("intercept dropped while silent", zap.Duration("silent", silent))
				r.setState(pc, "dropped", errors.New(reason), nil)
				r.drop(reason)
				return
			case r.isTerminating(pc):
				// The agent of a pod being deleted gave its intercepts back
				// and ended the session: nothing to reconnect to.
				log.Info("terminating pod's session ended")
				r.forget(pod, pc)
				sess.Close()
				return
			default:
				err = fmt.Errorf("tunnel session to pod %s lost", pod)
				log.Warn("session lost; reconnecting", zap.Duration("backoff", backoff))
			}
		}
		if errors.Is(err, errFatal) {
			r.mu.Lock()
			if r.fatal == nil {
				r.fatal = err
			}
			r.mu.Unlock()
			r.setState(pc, "refused", err, nil)
			return
		}
		if ctx.Err() != nil {
			return
		}
		r.setState(pc, "reconnecting", err, nil)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// leavePod gives the intercept on one pod back; the session, once its
// relayed connections are done, is kept as a spare for the next intercept
// of the pod, or closed.
func (r *runner) leavePod(log *zap.Logger, pod string, sess *client.Session) {
	rmCtx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	err := r.removeAll(rmCtx, sess)
	cancel()
	if err != nil {
		log.Warn("remove intercept", zap.Error(err))
		sess.Close()
		return
	}
	// New connections go to the app now; those already relayed to this
	// workstation may finish first.
	dctx, cancel := context.WithTimeout(context.Background(), leaveDrain)
	err = sess.Drain(dctx)
	cancel()
	if err != nil {
		log.Info("closing connections still open at leave", zap.Error(err))
		sess.Close()
		return
	}
	r.spares.put(r.spareKey(pod), sess)
}

func (r *runner) spareKey(pod string) spareKey {
	k := spareKey{namespace: r.req.Namespace, pod: pod, user: r.req.User}
	if r.cfg != nil {
		k.config = configKey(r.cfg)
	}
	return k
}

// spareCheck bounds the first request on a spare session: one that does
// not answer by then is closed, and a new one dialled.
const spareCheck = 2 * time.Second

// fromSpare creates the intercept on the daemon's spare session of pod,
// if it keeps one; nil and no error when it has none, or the spare does
// not answer in time (the caller dials a new session).
func (r *runner) fromSpare(ctx context.Context, pod string) (*client.Session, error) {
	sess := r.spares.take(r.spareKey(pod))
	if sess == nil { // none kept
		return nil, nil
	}
	sctx, cancel := context.WithTimeout(ctx, spareCheck)
	defer cancel()
	err := r.createAll(sctx, sess)
	if err == nil {
		r.log.Debug("intercept on a spare session", zap.String("pod", pod))
		return sess, nil
	}
	sess.Close() // gives back what createAll made
	if refusal(err) {
		return nil, fmt.Errorf("%w: pod %s: %w", errFatal, pod, err)
	}
	r.log.Info("spare session did not answer; dialling a new one", zap.String("pod", pod), zap.Error(err))
	return nil, nil
}

// refusal says whether an agent refused an intercept in a way retrying
// cannot fix.
func refusal(err error) bool {
	for _, e := range []error{tunnel.ErrAlreadyIntercepted, tunnel.ErrPortNotServed, tunnel.ErrUnsupportedMechanism, tunnel.ErrBadRequest, tunnel.ErrAppNotHTTP} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (r *runner) isTerminating(pc *podConn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return pc.terminating
}

// forget drops a pod's entry once its connection is over.
func (r *runner) forget(pod string, pc *podConn) {
	r.mu.Lock()
	if r.pods[pod] == pc {
		delete(r.pods, pod)
	}
	r.mu.Unlock()
	pc.cancel()
	r.notify()
}

// leaveDrain bounds how long leaving waits for the connections in flight
// on the workstation to finish.
const leaveDrain = 5 * time.Second

// silenceTick is how often an active session checks the wall clock; a
// tick that arrives more than silenceGap late means the machine slept or
// the daemon was stopped. Wall time, not monotonic: Linux's monotonic clock
// does not advance during suspend.
const (
	silenceTick      = time.Second
	silenceGap       = 5 * time.Second
	silenceAftermath = 30 * time.Second
)

// hold waits until ctx ends or sess is lost, and says how long the
// workstation was silent if the loss followed such a gap (zero otherwise).
// Meanwhile it checks, every holderCheck, that the agent still counts the
// intercept as this session's; if not, it logs who holds it now and ends
// the session, so the reconnect either takes it back or reports the holder.
func (r *runner) hold(ctx context.Context, sess *client.Session) time.Duration {
	tick := time.NewTicker(silenceTick)
	defer tick.Stop()
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go r.watchHolder(hctx, sess)
	return watchSilence(ctx, sess.Done(), tick.C, func() time.Time { return time.Now().Round(0) })
}

// holderCheck is how often an active session asks whether it still holds
// its intercept.
const holderCheck = 10 * time.Second

func (r *runner) watchHolder(ctx context.Context, sess *client.Session) {
	t := time.NewTicker(holderCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sess.Done():
			return
		case <-t.C:
		}
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		list, err := sess.List(lctx)
		cancel()
		if err != nil {
			continue // the session's own health decides
		}
		if err := r.stillHeldAll(list); err != nil {
			r.log.Warn("intercept no longer held by this session", zap.Error(err))
			sess.Close()
			return
		}
		r.recordMirror(sess, list)
	}
}

// stillHeldAll says why list does not show every port of the intercept
// as this session's, or nil when it does.
func (r *runner) stillHeldAll(list []tunnel.InterceptInfo) error {
	for i, name := range r.req.AgentNames() {
		if err := stillHeld(list, name, r.req.Ports[i].AppPort); err != nil {
			return err
		}
	}
	return nil
}

// stillHeld says why list (an agent's, as this session sees it) does not
// show intercept name on port as this session's, or nil when it does.
// Names are unique per client only: another developer's intercept of the
// same name may be listed too, before or after ours.
func stillHeld(list []tunnel.InterceptInfo, name string, port uint16) error {
	var other *tunnel.InterceptInfo
	for i, ic := range list {
		if ic.Name != name || ic.Port != port {
			continue
		}
		if ic.Yours {
			return nil
		}
		other = &list[i]
	}
	if other != nil {
		return fmt.Errorf("intercept %q on port %d is now held by another session (%s)", name, port, other.Holder)
	}
	return fmt.Errorf("intercept %q is gone from the agent", name)
}

// watchSilence returns when ctx ends (zero) or done closes: then, if a
// clock tick (ticks carry their time) came more than silenceGap late shortly before (the session
// died of that silence, not of the network), the length of the gap.
func watchSilence(ctx context.Context, done <-chan struct{}, ticks <-chan time.Time, now func() time.Time) time.Duration {
	last := now()
	var gap time.Duration
	var gapEnded time.Time
	for {
		select {
		case <-ctx.Done():
			return 0
		case t := <-ticks:
			t = t.Round(0) // wall time: the ticker's reading carries a monotonic one
			if g := t.Sub(last); g > silenceGap {
				gap, gapEnded = g, t
			}
			last = t
		case <-done:
			t := now()
			if g := t.Sub(last); g > silenceGap {
				return g
			}
			// A session that survived its silence for a while and then
			// died was lost to something else.
			if gap > 0 && t.Sub(gapEnded) < silenceAftermath {
				return gap
			}
			return 0
		}
	}
}

// drop ends the intercept on every pod after a silence, keeping its record
// so status can say what happened and resume can re-create it.
func (r *runner) drop(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dropped != "" {
		return
	}
	r.dropped = reason
	r.droppedAt = time.Now()
	for _, pc := range r.pods {
		pc.cancel()
	}
}

func (r *runner) connect(ctx context.Context, pod string) (*client.Session, error) {
	if sess, err := r.fromSpare(ctx, pod); sess != nil || err != nil {
		return sess, err
	}
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := kube.DialPod(dctx, r.cfg, r.cs, r.req.Namespace, pod, annotations.TunnelPort)
	if errors.Is(err, kube.ErrPortForwardForbidden) {
		// Retrying cannot grant a permission: say so now, not after the timeout.
		return nil, fmt.Errorf("%w: %w", errFatal, err)
	}
	if err != nil {
		return nil, err
	}
	sess, err := client.Open(dctx, conn, client.Options{ClientID: r.id.clientID, Secret: r.id.secret, User: r.req.User, Log: r.log})
	if err != nil {
		if errors.Is(err, tunnel.ErrVersionMismatch) {
			return nil, fmt.Errorf("%w: pod %s: %w", errFatal, pod, err)
		}
		return nil, err
	}
	if err := r.createAll(dctx, sess); err != nil {
		// Closing the session gives back the ports created before.
		sess.Close()
		if refusal(err) {
			return nil, fmt.Errorf("%w: pod %s: %w", errFatal, pod, err)
		}
		return nil, err
	}
	return sess, nil
}

// createAll asks the agent for every port of the intercept, one agent
// intercept per port, on one session.
func (r *runner) createAll(ctx context.Context, sess *client.Session) error {
	for i, name := range r.req.AgentNames() {
		p := r.req.Ports[i]
		if _, err := sess.CreateIntercept(ctx, client.InterceptSpec{Name: name, Port: p.AppPort, Mechanism: r.req.Mechanism, LocalAddr: p.LocalAddr, Args: p.MechanismArgs}); err != nil {
			return err
		}
	}
	return nil
}

// removeAll gives every port of the intercept back to the app; it tries
// them all and returns the first error.
func (r *runner) removeAll(ctx context.Context, sess *client.Session) error {
	var first error
	for _, name := range r.req.AgentNames() {
		if _, err := sess.RemoveIntercept(ctx, name); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// anySession returns a session on some active pod (the alphabetically
// first, so --to-pod keeps to one pod while it lasts).
func (r *runner) anySession() *client.Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := make([]string, 0, len(r.pods))
	for n, pc := range r.pods {
		if pc.session != nil {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil
	}
	sort.Strings(names)
	return r.pods[names[0]].session
}

// forwardToPod listens on 127.0.0.1:port and sends each connection to
// 127.0.0.1:port inside a pod, through the tunnel.
func (r *runner) forwardToPod(port uint16) error {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		return fmt.Errorf("--to-pod %d: cannot listen on 127.0.0.1:%d: %w", port, port, err)
	}
	r.mu.Lock()
	r.toPod = append(r.toPod, ln)
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				defer c.Close()
				s := r.anySession()
				if s == nil {
					r.log.Warn("--to-pod: no active pod session", zap.Uint16("port", port))
					return
				}
				pc, err := s.DialPod(r.ctx, port)
				if err != nil {
					r.log.Warn("--to-pod", zap.Error(err))
					return
				}
				tunnel.Join(c, pc)
			}()
		}
	}()
	return nil
}

func (r *runner) env(ctx context.Context) (map[string]string, error) {
	s := r.anySession()
	if s == nil {
		return nil, fmt.Errorf("no active pod session to read the environment from")
	}
	return s.Environment(ctx)
}

// stop removes the intercept from every pod and waits for the connections.
func (r *runner) stop() {
	r.mu.Lock()
	for _, ln := range r.toPod {
		ln.Close()
	}
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
	if r.req.Replace != "" && !r.keepReplace.Load() {
		r.restore()
	}
}

// restore gives a replaced workload its app back (its pods roll). It
// cannot fail the leave: if the API cannot be reached, the agents ask the
// webhook for the same after the grace period.
func (r *runner) restore() {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := kube.RemoveReplace(ctx, r.cs, r.req.Namespace, r.req.Workload, r.req.Replace); err != nil {
		r.log.Warn("could not give the workload its app back; the webhook will after the grace period", zap.Error(err))
		return
	}
	r.log.Info("gave the workload its app back (detour.dev/replace removed; its pods roll)")
}

func (r *runner) status() InterceptStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := InterceptStatus{InterceptRequest: r.req, Created: r.created, State: "active", Pods: []PodState{}}
	active := 0
	held := 0
	for _, pc := range r.pods {
		st.Pods = append(st.Pods, pc.state)
		switch {
		case pc.terminating:
		case pc.state.State == "active":
			active++
			held++
		default:
			held++
		}
	}
	for _, name := range r.noAgent {
		st.Pods = append(st.Pods, PodState{Pod: name, State: "no-agent",
			LastError: "created without the detour agent (was the detour-system/detour-webhook down?): its traffic goes to the app; roll the workload once the webhook runs"})
	}
	st.Mirror = mirrorTotal(r.req.Mechanism, st.Pods)
	switch {
	case r.dropped != "":
		st.State, st.Dropped = "dropped", r.dropped
		at := r.droppedAt
		st.DroppedAt = &at
	case active < held || held == 0 || len(r.noAgent) > 0:
		st.State = "degraded"
	}
	sort.Slice(st.Pods, func(i, j int) bool { return st.Pods[i].Pod < st.Pods[j].Pod })
	return st
}
