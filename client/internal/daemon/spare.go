package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
)

// SessionLingerEnv sets how long the session of an intercept that was left
// stays open for the next intercept on the same pod (a Go duration; 0
// closes it at once, as before spare sessions).
const SessionLingerEnv = "DETOUR_SESSION_LINGER"

// DefaultSessionLinger is how long a left intercept's session waits for
// the next intercept of its pod: long enough for a leave, an edit and a
// rebuild, short enough that an idle port-forward does not stay long.
const DefaultSessionLinger = 2 * time.Minute

// SessionLinger reads SessionLingerEnv (the daemon's environment: that of
// the command that started it); on a bad value it says why and returns
// the default.
func SessionLinger() (time.Duration, error) {
	v := os.Getenv(SessionLingerEnv)
	if v == "" {
		return DefaultSessionLinger, nil
	}
	d, err := time.ParseDuration(v)
	if err == nil && d < 0 {
		err = errors.New("negative")
	}
	if err != nil {
		return DefaultSessionLinger, fmt.Errorf("$%s=%q: want a duration such as 2m, or 0 for none: %w", SessionLingerEnv, v, err)
	}
	return d, nil
}

// spareKey says which sessions are interchangeable: to the same pod, for
// the same user, opened with the same credentials (configKey), so that a
// spare never carries an intercept the port-forward's RBAC check was not
// made for.
type spareKey struct{ config, namespace, pod, user string }

// configKey is a digest of what in cfg decides who the API server sees.
func configKey(cfg *rest.Config) string {
	h := sha256.New()
	parts := []string{cfg.Host, cfg.APIPath, cfg.Username, cfg.Password, cfg.BearerToken, cfg.BearerTokenFile,
		cfg.CertFile, string(cfg.CertData), cfg.KeyFile, string(cfg.KeyData),
		cfg.Impersonate.UserName, cfg.Impersonate.UID, strings.Join(cfg.Impersonate.Groups, ",")}
	if e := cfg.ExecProvider; e != nil {
		parts = append(parts, e.Command, strings.Join(e.Args, "\x00"), fmt.Sprint(e.Env))
	}
	if a := cfg.AuthProvider; a != nil {
		parts = append(parts, a.Name, fmt.Sprint(a.Config))
	}
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s;", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// spares keeps the sessions of intercepts that were left, each for
// linger, so that an intercept of the same pod soon after skips the
// port-forward and the hello (docs/architecture.md, "Spare sessions").
// A spare holds no intercept: the agent routes nothing to it.
type spares[S session] struct {
	mu     sync.Mutex
	linger time.Duration
	closed bool
	m      map[spareKey]*spare[S]
}

// session is what spares needs of a *client.Session.
type session interface {
	Close() error
	Done() <-chan struct{}
}

type spare[S session] struct {
	sess  S
	timer *time.Timer
}

func newSpares[S session](linger time.Duration) *spares[S] {
	return &spares[S]{linger: linger, m: map[spareKey]*spare[S]{}}
}

// put keeps sess for the next intercept on k, or closes it: when spares
// are off or closed, or k already has one.
func (s *spares[S]) put(k spareKey, sess S) {
	if s == nil {
		sess.Close()
		return
	}
	s.mu.Lock()
	if s.closed || s.linger <= 0 || s.m[k] != nil {
		s.mu.Unlock()
		sess.Close()
		return
	}
	sp := &spare[S]{sess: sess}
	sp.timer = time.AfterFunc(s.linger, func() { s.expire(k, sp) })
	s.m[k] = sp
	s.mu.Unlock()
	go func() {
		<-sess.Done() // lost meanwhile (the pod went, the port-forward broke)
		s.expire(k, sp)
	}()
}

// take returns k's spare session, if it has one that is still open.
func (s *spares[S]) take(k spareKey) (none S) {
	if s == nil {
		return none
	}
	s.mu.Lock()
	sp := s.m[k]
	delete(s.m, k)
	s.mu.Unlock()
	if sp == nil {
		return none
	}
	sp.timer.Stop()
	select {
	case <-sp.sess.Done():
		sp.sess.Close()
		return none
	default:
		return sp.sess
	}
}

// expire closes sp if it is still k's spare (not taken meanwhile).
func (s *spares[S]) expire(k spareKey, sp *spare[S]) {
	s.mu.Lock()
	mine := s.m[k] == sp
	if mine {
		delete(s.m, k)
	}
	s.mu.Unlock()
	if mine {
		sp.sess.Close()
	}
}

// closeAll closes every spare and keeps no more: the daemon stops.
func (s *spares[S]) closeAll() {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.closed = true
	all := s.m
	s.m = map[spareKey]*spare[S]{}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, sp := range all {
		sp.timer.Stop()
		wg.Go(func() { sp.sess.Close() })
	}
	wg.Wait()
}

// count is how many spares are kept now.
func (s *spares[S]) count() int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
