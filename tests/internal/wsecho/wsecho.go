package wsecho

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// TagHeader is the upgrade response header that carries the server's tag.
const TagHeader = "X-Detour-Tag"

// closeWait bounds the closing handshake: how long a side waits for the
// peer's close frame before dropping the connection.
const closeWait = 2 * time.Second

// Reply is the server's answer to msg: tag, a space, then msg.
func Reply(tag, msg string) string { return tag + " " + msg }

// Handler is a WebSocket echo http.Handler. Hijacked connections are not
// tracked by http.Server.Shutdown, so the owner calls Close to end them.
type Handler struct {
	tag      string
	upgrader websocket.Upgrader

	mu     sync.Mutex
	closed bool
	conns  map[*websocket.Conn]struct{}
	wg     sync.WaitGroup // one per ServeHTTP call in progress
}

// NewHandler returns a Handler that answers with tag. It accepts any Origin:
// it is a test server.
func NewHandler(tag string) *Handler {
	return &Handler{
		tag: tag,
		upgrader: websocket.Upgrader{
			HandshakeTimeout: 10 * time.Second,
			CheckOrigin:      func(*http.Request) bool { return true },
		},
		conns: make(map[*websocket.Conn]struct{}),
	}
}

// ServeHTTP upgrades the request and echoes messages until the client closes
// the connection or Close is called. A request that is not a WebSocket
// upgrade gets 400 Bad Request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		http.Error(w, "wsecho: closed", http.StatusServiceUnavailable)
		return
	}
	h.wg.Add(1)
	h.mu.Unlock()
	defer h.wg.Done()

	conn, err := h.upgrader.Upgrade(w, r, http.Header{TagHeader: {h.tag}})
	if err != nil {
		return // Upgrade has answered with an error status
	}
	defer conn.Close()
	if !h.track(conn) {
		return
	}
	defer h.untrack(conn)

	for {
		typ, msg, err := conn.ReadMessage()
		if err != nil {
			return // a close frame (answered by gorilla's close handler) or a broken connection
		}
		if err := conn.WriteMessage(typ, []byte(Reply(h.tag, string(msg)))); err != nil {
			return
		}
	}
}

func (h *Handler) track(conn *websocket.Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.conns[conn] = struct{}{}
	return true
}

func (h *Handler) untrack(conn *websocket.Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.conns, conn)
}

// Close refuses new connections, closes the live ones and waits for their
// ServeHTTP calls to return. It is safe to call more than once.
func (h *Handler) Close() {
	h.mu.Lock()
	h.closed = true
	for c := range h.conns {
		// Closing the underlying conn unblocks ReadMessage; the handler
		// goroutine then returns. No close frame: this is a server stop.
		_ = c.NetConn().Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// Echo dials url (ws:// or wss://; the server's certificate is not verified)
// with the extra request header, sends msgs as text messages one at a time,
// waiting for each reply before the next, then closes the connection with a
// normal closure. It returns the replies received, also on error. ctx bounds
// the whole exchange.
func Echo(ctx context.Context, url string, header http.Header, msgs []string) ([]string, error) {
	d := websocket.Dialer{
		HandshakeTimeout: 10 * time.Second,
		TLSClientConfig: &tls.Config{
			InsecureSkipVerify: true, // test servers use self-signed certificates
			NextProtos:         []string{"http/1.1"},
		},
	}
	conn, resp, err := d.DialContext(ctx, url, header)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("wsecho dial %s: %w (status %s)", url, err, resp.Status)
		}
		return nil, fmt.Errorf("wsecho dial %s: %w", url, err)
	}
	defer conn.Close()
	// Once ctx ends, a deadline in the past unblocks any read or write.
	stop := context.AfterFunc(ctx, func() { _ = conn.NetConn().SetDeadline(time.Unix(1, 0)) })
	defer stop()
	wrap := func(what string, err error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("wsecho %s: %w", what, context.Cause(ctx))
		}
		return fmt.Errorf("wsecho %s: %w", what, err)
	}

	replies := make([]string, 0, len(msgs))
	for i, m := range msgs {
		if err := conn.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
			return replies, wrap(fmt.Sprintf("send message %d", i), err)
		}
		_, reply, err := conn.ReadMessage()
		if err != nil {
			return replies, wrap(fmt.Sprintf("receive reply %d", i), err)
		}
		replies = append(replies, string(reply))
	}

	// Closing handshake: send our close frame, then read the server's.
	deadline := time.Now().Add(closeWait)
	bye := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	if err := conn.WriteControl(websocket.CloseMessage, bye, deadline); err != nil {
		return replies, wrap("send close", err)
	}
	_ = conn.SetReadDeadline(deadline)
	_, extra, err := conn.ReadMessage()
	var ce *websocket.CloseError
	switch {
	case err == nil:
		return replies, fmt.Errorf("wsecho: unexpected message after close: %q", extra)
	case websocket.IsCloseError(err, websocket.CloseNormalClosure):
		return replies, nil
	case errors.As(err, &ce):
		return replies, fmt.Errorf("wsecho: server closed with %w", err)
	default:
		return replies, wrap("wait for close", err)
	}
}
