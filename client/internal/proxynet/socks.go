package proxynet

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/things-go/go-socks5"
	"github.com/things-go/go-socks5/statute"
	"go.uber.org/zap"

	"github.com/detour-dev/detour/tunnel"
)

// serveSOCKS serves SOCKS5 on ln until it is closed.
func (s *server) serveSOCKS(ln net.Listener) {
	opts := []socks5.Option{
		socks5.WithResolver(socksResolver{s}),
		socks5.WithConnectHandle(s.socksConnect),
		socks5.WithBindHandle(refuseCommand),
		socks5.WithAssociateHandle(refuseCommand),
		socks5.WithLogger(socksLogger{s.cfg.Log}),
	}
	if s.cfg.Password != "" {
		opts = append(opts, socks5.WithCredential(credentials{s.cfg.Password}))
	}
	srv := socks5.NewServer(opts...)
	for {
		c, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil { // out of descriptors, say: let some close
			s.cfg.Log.Debug("socks5 accept", zap.Error(err))
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if !s.tr.enter() {
			_ = c.Close()
			return
		}
		go func() {
			defer s.tr.leave()
			// The greeting and the request must come promptly; the
			// connect handler lifts the deadline once the destination
			// answers.
			_ = c.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
			if err := srv.ServeConn(c); err != nil {
				s.cfg.Log.Debug("socks5", zap.Stringer("client", c.RemoteAddr()), zap.Error(err))
			}
		}()
	}
}

// addrsKey carries every address a SOCKS5 domain name resolved to, from
// the resolver to the connect handler.
type addrsKey struct{}

// socksResolver resolves SOCKS5 domain names with our Resolver.
type socksResolver struct{ s *server }

func (r socksResolver) Resolve(ctx context.Context, name string) (context.Context, net.IP, error) {
	lctx, cancel := context.WithTimeout(r.s.ctx, r.s.cfg.ConnectTimeout)
	defer cancel()
	addrs, err := r.s.lookup(lctx, name)
	if err != nil {
		return ctx, nil, err // the library replies "host unreachable"
	}
	return context.WithValue(ctx, addrsKey{}, addrs), addrs[0].AsSlice(), nil
}

// socksConnect dials the request's destination and relays.
func (s *server) socksConnect(ctx context.Context, w io.Writer, req *socks5.Request) error {
	client, ok := w.(net.Conn)
	if !ok {
		return fmt.Errorf("socks5: the client is a %T, not a connection", w)
	}
	addrs, _ := ctx.Value(addrsKey{}).([]netip.Addr)
	if addrs == nil {
		a, ok := netip.AddrFromSlice(req.DestAddr.IP)
		if !ok {
			_ = socks5.SendReply(w, statute.RepAddrTypeNotSupported, nil)
			return fmt.Errorf("socks5: destination %v has no address", req.RawDestAddr)
		}
		addrs = []netip.Addr{a.Unmap()}
	}
	dctx, cancel := context.WithTimeout(s.ctx, s.cfg.ConnectTimeout)
	target, err := s.dialAny(dctx, addrs, uint16(req.DestAddr.Port))
	cancel()
	if err != nil {
		_ = socks5.SendReply(w, classify(err).socks, nil)
		return fmt.Errorf("connect to %v: %w", req.RawDestAddr, err)
	}
	_ = client.SetReadDeadline(time.Time{})
	if err := socks5.SendReply(w, statute.RepSuccess, bindAddr(target)); err != nil {
		_ = target.Close()
		return fmt.Errorf("socks5 reply: %w", err)
	}
	tunnel.Join(&readerConn{Conn: client, r: req.Reader}, target)
	return nil
}

// bindAddr is the reply's BND.ADDR: the local end of a TCP dial, else
// 0.0.0.0:0 (a dial stream through the agent has no address here).
func bindAddr(c net.Conn) net.Addr {
	if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
		return a
	}
	return &net.TCPAddr{IP: net.IPv4zero}
}

func refuseCommand(_ context.Context, w io.Writer, req *socks5.Request) error {
	_ = socks5.SendReply(w, statute.RepCommandNotSupported, nil)
	return fmt.Errorf("socks5 command %d is not supported (CONNECT only)", req.Command)
}

// credentials accept User with the password.
type credentials struct{ password string }

func (c credentials) Valid(user, password, _ string) bool {
	u := subtle.ConstantTimeCompare([]byte(user), []byte(User))
	p := subtle.ConstantTimeCompare([]byte(password), []byte(c.password))
	return u&p == 1
}

// socksLogger sends the library's messages (a failed connection each) to
// the debug log.
type socksLogger struct{ log *zap.Logger }

func (l socksLogger) Errorf(format string, args ...any) {
	l.log.Debug("socks5: " + fmt.Sprintf(format, args...))
}

// readerConn reads through r (a bufio.Reader holding bytes the client
// sent after its request) and writes to the connection.
type readerConn struct {
	net.Conn
	r io.Reader
}

func (c *readerConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *readerConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
