package kube

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/httpstream"
	httpstreamspdy "k8s.io/apimachinery/pkg/util/httpstream/spdy"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport/spdy"
)

// spdyHeaderLen is the length of every SPDY/3.1 frame's header: a control
// bit with version and type (or a data frame's stream id), then flags (8
// bits) and the length of what follows (24 bits).
const spdyHeaderLen = 8

// maxFrameCopy bounds what spdyFrameConn copies to send a frame in one
// write; a longer body follows its header in writes of its own.
const maxFrameCopy = 64 << 10

// spdyFrameConn sends every SPDY frame in one write to the connection under
// it. spdystream's framer writes a data frame as three writes (stream id,
// flags+length, data) and a control frame in more, straight to the TLS
// connection: each becomes a TLS record of its own, which the API server,
// the kubelet and the container runtime each read and pass on one by one
// (a 4-byte record costs them what a 16 KiB one does). This is protocol
// code by hand because spdystream offers no buffered writer; it only
// needs the frame length, which is in the same place in both kinds of
// frame. spdystream writes each frame under its write lock, whole, so a
// frame's last byte always comes in the same call: nothing is held back.
type spdyFrameConn struct {
	net.Conn
	buf  []byte // the frame so far (header, then body up to maxFrameCopy)
	body int    // body bytes of the current frame still to come; -1 in a header
}

func newSPDYFrameConn(c net.Conn) *spdyFrameConn {
	return &spdyFrameConn{Conn: c, body: -1}
}

func (c *spdyFrameConn) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if c.body < 0 {
			k := min(spdyHeaderLen-len(c.buf), len(p))
			c.buf = append(c.buf, p[:k]...)
			p = p[k:]
			if len(c.buf) == spdyHeaderLen {
				c.body = int(binary.BigEndian.Uint32(c.buf[4:8]) & 0xffffff)
			}
		} else {
			k := min(c.body, len(p))
			if len(c.buf)+k <= maxFrameCopy {
				c.buf = append(c.buf, p[:k]...)
			} else {
				if err := c.flush(); err != nil {
					return 0, err
				}
				if _, err := c.Conn.Write(p[:k]); err != nil {
					return 0, err
				}
			}
			c.body -= k
			p = p[k:]
		}
		if c.body == 0 {
			c.body = -1
			if err := c.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (c *spdyFrameConn) flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}

// framedUpgrader is client-go's SPDY round tripper with one change: the
// SPDY connection writes through a spdyFrameConn. It dials and sends the
// upgrade request with the round tripper's own code (Dial), and leaves a
// refused upgrade to it, so errors read as client-go's do.
type framedUpgrader struct {
	rt   *httpstreamspdy.SpdyRoundTripper
	conn net.Conn
}

// spdyRoundTripperFor is client-go's spdy.RoundTripperFor with the framed
// upgrader in place of its own.
func spdyRoundTripperFor(cfg *rest.Config) (http.RoundTripper, spdy.Upgrader, error) {
	tlsConfig, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return nil, nil, err
	}
	proxy := http.ProxyFromEnvironment
	if cfg.Proxy != nil {
		proxy = cfg.Proxy
	}
	rt, err := httpstreamspdy.NewRoundTripperWithConfig(httpstreamspdy.RoundTripperConfig{
		TLS: tlsConfig, Proxier: proxy, PingPeriod: spdyPingPeriod,
	})
	if err != nil {
		return nil, nil, err
	}
	u := &framedUpgrader{rt: rt}
	wrapper, err := rest.HTTPWrappersForConfig(cfg, u)
	if err != nil {
		return nil, nil, err
	}
	return wrapper, u, nil
}

// spdyPingPeriod is client-go's for port-forwards.
const spdyPingPeriod = 5 * time.Second

func (u *framedUpgrader) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header = req.Header.Clone()
	req.Header.Add(httpstream.HeaderConnection, httpstream.HeaderUpgrade)
	req.Header.Add(httpstream.HeaderUpgrade, httpstreamspdy.HeaderSpdy31)
	conn, err := u.rt.Dial(req)
	if err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	u.conn = conn
	return resp, nil
}

func (u *framedUpgrader) NewConnection(resp *http.Response) (httpstream.Connection, error) {
	conn := strings.ToLower(resp.Header.Get(httpstream.HeaderConnection))
	upgrade := strings.ToLower(resp.Header.Get(httpstream.HeaderUpgrade))
	if u.conn == nil {
		return nil, errors.New("spdy upgrade: no connection was dialled")
	}
	if resp.StatusCode != http.StatusSwitchingProtocols ||
		!strings.Contains(conn, strings.ToLower(httpstream.HeaderUpgrade)) ||
		!strings.Contains(upgrade, strings.ToLower(httpstreamspdy.HeaderSpdy31)) {
		// client-go's own check, for its error message (it reads the
		// body from the connection, so that is closed afterwards).
		_, err := u.rt.NewConnection(resp)
		u.conn.Close()
		if err == nil {
			err = errors.New("spdy upgrade refused")
		}
		return nil, err
	}
	return httpstreamspdy.NewClientConnectionWithPings(newSPDYFrameConn(u.conn), spdyPingPeriod)
}
