package agent

import (
	"context"
	"net"
	"net/netip"
	"strconv"

	"github.com/detour-dev/detour/tunnel"
	"go.uber.org/zap"
)

func (a *Agent) acceptInbound(l inboundListener) error {
	return acceptLoop(l.ln, a.log, func(c net.Conn) {
		if !a.conns.add(c) {
			_ = c.Close()
			return
		}
		go func() {
			defer a.conns.done(c)
			defer c.Close()
			port := l.appPort
			if l.redirect {
				var ok bool
				if port, ok = a.redirectedPort(c); !ok {
					return
				}
			}
			a.route(c, port)
		}()
	})
}

// redirectedPort reads which app port a redirected connection was for. A
// connection made straight to the redirect port (not redirected), or for a
// port we were not configured with, is refused: the agent relays only the
// app ports it was told about.
func (a *Agent) redirectedPort(c net.Conn) (uint16, bool) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0, false
	}
	dst, err := originalDst(tc)
	if err != nil {
		a.m.rejected.WithLabelValues("no_original_dst").Inc()
		a.log.Debug("connection without original destination refused", zap.Stringer("from", c.RemoteAddr()), zap.Error(err))
		return 0, false
	}
	if !containsPort(a.cfg.RedirectPorts, dst.Port()) {
		a.m.rejected.WithLabelValues("port_not_served").Inc()
		a.log.Debug("redirected connection for a port not served", zap.Stringer("from", c.RemoteAddr()), zap.Stringer("dst", dst))
		return 0, false
	}
	return dst.Port(), true
}

// route sends c to the client holding an intercept on port, or to the app.
// Mirrors get copies on the way: every connection's bytes (tcp-mirror),
// or the requests the HTTP router reads (http-mirror).
func (a *Agent) route(c net.Conn, port uint16) {
	if a.answerProbe(c, port) {
		return
	}
	st := a.reg.lookup(port)
	if st != nil && len(st.tcpMirrors) > 0 {
		t := tee(c, st.tcpMirrors)
		defer t.end()
		c = t
	}
	switch {
	case st == nil:
	case st.tcp != nil:
		if a.toClient(c, port, st.tcp) {
			return
		}
		a.m.failOpen.Inc()
	case len(st.http) > 0 || len(st.httpMirrors) > 0:
		if hp := a.httpPort(port); hp != nil {
			a.m.connections.WithLabelValues(routeHTTP).Inc()
			active := a.m.active.WithLabelValues(routeHTTP)
			active.Inc()
			hp.serveConn(c)
			active.Dec()
			return
		}
	}
	a.toApp(c, port)
}

func (a *Agent) toClient(c net.Conn, port uint16, ic *intercept) bool {
	st, err := a.openIntercepted(ic, addrPortString(c.RemoteAddr()))
	if err != nil {
		a.log.Info("client unreachable; connection goes to the app", zap.String("intercept", ic.name), zap.String("holder", ic.owner.user), zap.Error(err))
		return false
	}
	a.relay(c, st, routeClient)
	return true
}

func (a *Agent) toApp(c net.Conn, port uint16) {
	d := net.Dialer{Timeout: a.cfg.DialTimeout}
	app, err := d.DialContext(context.Background(), "tcp", net.JoinHostPort(a.cfg.AppHost, strconv.Itoa(int(port))))
	if err != nil {
		a.m.appDialErrors.Inc()
		a.log.Warn("app unreachable; connection closed", zap.Uint16("port", port), zap.Error(err))
		return
	}
	a.relay(c, app, routeApp)
}

func (a *Agent) relay(c, upstream net.Conn, route string) {
	a.m.connections.WithLabelValues(route).Inc()
	active := a.m.active.WithLabelValues(route)
	active.Inc()
	in, out := tunnel.Join(c, upstream)
	active.Dec()
	a.m.bytes.WithLabelValues(route, "in").Add(float64(in))
	a.m.bytes.WithLabelValues(route, "out").Add(float64(out))
}

func addrPortString(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().String()
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.String()
	}
	return ""
}
