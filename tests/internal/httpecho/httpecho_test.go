package httpecho_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/detour-dev/detour/tests/internal/grpcecho"
	"github.com/detour-dev/detour/tests/internal/httpecho"
	"github.com/detour-dev/detour/tests/internal/wsecho"
)

const tag = "backend-a"

// startServeAll runs ServeAll on 127.0.0.1:0 and returns its address and a
// stop function that cancels it and returns its result within 10s. The test's
// cleanup stops it too and reports an error result.
func startServeAll(t *testing.T, tlsCfg *tls.Config) (addr string, stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- httpecho.ServeAll(ctx, ln, tag, tlsCfg) }()
	var result error
	stopped := false
	stop = func() error {
		if stopped {
			return result
		}
		stopped = true
		cancel()
		select {
		case result = <-done:
		case <-time.After(10 * time.Second):
			result = errors.New("ServeAll did not return within 10s of cancel")
		}
		return result
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("ServeAll: %v", err)
		}
	})
	return ln.Addr().String(), stop
}

// client is one way to speak HTTP to the server.
type client struct {
	name      string
	rt        http.RoundTripper
	scheme    string
	wantProto string
}

func clients(t *testing.T, certPEM []byte) []client {
	t.Helper()
	h2c := &http2.Transport{
		AllowHTTP: true, // http:// URLs, HTTP/2 with prior knowledge
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(h2c.CloseIdleConnections)
	h1 := &http.Transport{}
	t.Cleanup(h1.CloseIdleConnections)
	cs := []client{
		{name: "http1", rt: h1, scheme: "http", wantProto: "HTTP/1.1"},
		{name: "h2c", rt: h2c, scheme: "http", wantProto: "HTTP/2.0"},
	}
	if certPEM == nil {
		return cs
	}
	tls1, err := httpecho.ClientTLS(certPEM, "http/1.1")
	if err != nil {
		t.Fatal(err)
	}
	tls2, err := httpecho.ClientTLS(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	h1s := &http.Transport{TLSClientConfig: tls1}
	h2s := &http.Transport{TLSClientConfig: tls2, ForceAttemptHTTP2: true}
	t.Cleanup(h1s.CloseIdleConnections)
	t.Cleanup(h2s.CloseIdleConnections)
	return []client{
		{name: "https1", rt: h1s, scheme: "https", wantProto: "HTTP/1.1"},
		{name: "h2", rt: h2s, scheme: "https", wantProto: "HTTP/2.0"},
	}
}

func TestServeAll(t *testing.T) {
	serverTLS, certPEM, _, err := httpecho.SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []struct {
		name    string
		tls     *tls.Config
		certPEM []byte
	}{
		{name: "cleartext"},
		{name: "tls", tls: serverTLS, certPEM: certPEM},
	} {
		t.Run(mode.name, func(t *testing.T) {
			addr, _ := startServeAll(t, mode.tls)
			for _, c := range clients(t, mode.certPEM) {
				t.Run(c.name, func(t *testing.T) {
					testHTTP(t, c, c.scheme+"://"+addr)
				})
			}
			t.Run("websocket", func(t *testing.T) {
				scheme := "ws"
				if mode.tls != nil {
					scheme = "wss"
				}
				testWebSocket(t, scheme+"://"+addr+httpecho.WebSocketPath)
			})
			t.Run("grpc", func(t *testing.T) {
				var clientTLS *tls.Config
				if mode.tls != nil {
					if clientTLS, err = httpecho.ClientTLS(mode.certPEM); err != nil {
						t.Fatal(err)
					}
				}
				testGRPC(t, addr, clientTLS)
			})
		})
	}
}

func do(t *testing.T, c client, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	if resp.Proto != c.wantProto {
		t.Errorf("%s %s: response protocol %s, want %s", req.Method, req.URL, resp.Proto, c.wantProto)
	}
	return resp, body
}

func newRequest(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func testHTTP(t *testing.T, c client, base string) {
	t.Run("plain", func(t *testing.T) {
		resp, body := do(t, c, newRequest(t, http.MethodPut, base+"/some/path?q=1", strings.NewReader("ignored")))
		if want := httpecho.Reply(tag, "PUT", "/some/path"); string(body) != want {
			t.Errorf("body = %q, want %q", body, want)
		}
		if resp.StatusCode != http.StatusOK {
			t.Errorf("status = %d", resp.StatusCode)
		}
		if got := resp.Header.Get(httpecho.TagHeader); got != tag {
			t.Errorf("%s = %q, want %q", httpecho.TagHeader, got, tag)
		}
		if got := resp.Header.Get(httpecho.ProtoHeader); got != c.wantProto {
			t.Errorf("%s = %q, want %q", httpecho.ProtoHeader, got, c.wantProto)
		}
	})

	t.Run("echo streams", func(t *testing.T) {
		// Each chunk must come back before the next is sent: the handler
		// streams rather than buffering the whole body.
		pr, pw := io.Pipe()
		req := newRequest(t, http.MethodPost, base+httpecho.EchoPath, pr)
		// On timeout, end the body too: the transport waits for its writer.
		defer context.AfterFunc(req.Context(), func() { pw.CloseWithError(req.Context().Err()) })()
		resp, err := c.rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.Proto != c.wantProto || resp.Header.Get(httpecho.TagHeader) != tag {
			t.Errorf("response %s with %s %q", resp.Proto, httpecho.TagHeader, resp.Header.Get(httpecho.TagHeader))
		}
		for i, chunk := range []string{"first", strings.Repeat("y", 100_000), "last"} {
			if _, err := io.WriteString(pw, chunk); err != nil {
				t.Fatalf("write chunk %d: %v", i, err)
			}
			got := make([]byte, len(chunk))
			if _, err := io.ReadFull(resp.Body, got); err != nil {
				t.Fatalf("read chunk %d back: %v", i, err)
			}
			if string(got) != chunk {
				t.Fatalf("chunk %d came back as %.40q", i, got)
			}
		}
		pw.Close()
		if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
			t.Errorf("after the body ended: %q, %v; want EOF", rest, err)
		}
	})

	t.Run("trailer", func(t *testing.T) {
		resp, body := do(t, c, newRequest(t, http.MethodGet, base+httpecho.TrailerPath, nil))
		if want := httpecho.Reply(tag, "GET", httpecho.TrailerPath); string(body) != want {
			t.Errorf("body = %q, want %q", body, want)
		}
		if got := resp.Trailer.Get(httpecho.TrailerHeader); got != tag {
			t.Errorf("trailer %s = %q, want %q (trailers %v)", httpecho.TrailerHeader, got, tag, resp.Trailer)
		}
	})

	t.Run("slow", func(t *testing.T) {
		start := time.Now()
		_, body := do(t, c, newRequest(t, http.MethodGet, base+httpecho.SlowPath+"?ms=150", nil))
		if d := time.Since(start); d < 150*time.Millisecond {
			t.Errorf("answered after %v, want ≥ 150ms", d)
		}
		if want := httpecho.Reply(tag, "GET", httpecho.SlowPath); string(body) != want {
			t.Errorf("body = %q, want %q", body, want)
		}
		for _, q := range []string{"", "?ms=", "?ms=-1", "?ms=abc"} {
			resp, _ := do(t, c, newRequest(t, http.MethodGet, base+httpecho.SlowPath+q, nil))
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s%s: status %d, want 400", httpecho.SlowPath, q, resp.StatusCode)
			}
		}
	})

	if c.wantProto == "HTTP/1.1" {
		t.Run("grpc needs http2", func(t *testing.T) {
			req := newRequest(t, http.MethodPost, base+grpcecho.UnaryMethod, nil)
			req.Header.Set("Content-Type", "application/grpc")
			resp, _ := do(t, c, req)
			if resp.StatusCode != http.StatusHTTPVersionNotSupported {
				t.Errorf("gRPC over HTTP/1.1: status %d, want 505", resp.StatusCode)
			}
		})
	}
}

func testWebSocket(t *testing.T, url string) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	msgs := []string{"one", "two", strings.Repeat("z", 70_000)}
	replies, err := wsecho.Echo(ctx, url, http.Header{"X-Route": {"canary"}}, msgs)
	if err != nil {
		t.Fatalf("Echo %s: %v", url, err)
	}
	want := make([]string, len(msgs))
	for i, m := range msgs {
		want[i] = wsecho.Reply(tag, m)
	}
	if !slices.Equal(replies, want) {
		t.Errorf("replies = %.50q, want %.50q", replies, want)
	}
}

func testGRPC(t *testing.T, addr string, clientTLS *tls.Config) {
	conn, err := grpcecho.NewClient(addr, clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "x-route", "canary")

	var header metadata.MD
	reply, err := grpcecho.Unary(ctx, conn, []byte("hi"), grpc.Header(&header))
	if err != nil {
		t.Fatalf("Unary: %v", err)
	}
	if want := grpcecho.Reply(tag, []byte("hi")); !bytes.Equal(reply, want) {
		t.Errorf("Unary = %q, want %q", reply, want)
	}
	if got := header.Get(grpcecho.TagHeader); !slices.Equal(got, []string{tag}) {
		t.Errorf("Unary header %s = %q, want [%q]", grpcecho.TagHeader, got, tag)
	}

	msgs := [][]byte{[]byte("a"), []byte("b"), bytes.Repeat([]byte("c"), 70_000)}
	replies, err := grpcecho.Bidi(ctx, conn, msgs)
	if err != nil {
		t.Fatalf("Bidi: %v", err)
	}
	if len(replies) != len(msgs) {
		t.Fatalf("Bidi: %d replies, want %d", len(replies), len(msgs))
	}
	for i, m := range msgs {
		if want := grpcecho.Reply(tag, m); !bytes.Equal(replies[i], want) {
			t.Errorf("Bidi reply %d = %.40q, want %.40q", i, replies[i], want)
		}
	}
}

// TestServeAllStopsLongExchanges checks that cancelling ServeAll ends a live
// gRPC stream, a WebSocket connection and a slow request promptly, well
// before the graceful-shutdown bound.
func TestServeAllStopsLongExchanges(t *testing.T) {
	addr, stop := startServeAll(t, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	conn, err := grpcecho.NewClient(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true},
		grpcecho.BidiMethod, grpc.ForceCodecV2(grpcecho.Codec{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg([]byte("x")); err != nil {
		t.Fatal(err)
	}
	var reply []byte
	if err := stream.RecvMsg(&reply); err != nil {
		t.Fatal(err)
	}

	ws, _, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+addr+httpecho.WebSocketPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := ws.WriteMessage(websocket.TextMessage, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ws.ReadMessage(); err != nil {
		t.Fatal(err)
	}

	h1 := &http.Transport{}
	defer h1.CloseIdleConnections()
	slow := make(chan error, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s%s?ms=%d", addr, httpecho.SlowPath, httpecho.MaxSlow.Milliseconds()), nil)
		if err != nil {
			slow <- err
			return
		}
		resp, err := h1.RoundTrip(req)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		slow <- err
	}()
	time.Sleep(100 * time.Millisecond) // let the slow request arrive

	start := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("ServeAll: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("ServeAll took %v to stop", d)
	}
	if err := stream.RecvMsg(&reply); err == nil {
		t.Error("gRPC stream still delivering after stop")
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := ws.ReadMessage(); err == nil {
		t.Error("WebSocket still open after stop")
	}
	select {
	case <-slow: // either an empty answer or a broken connection
	case <-time.After(5 * time.Second):
		t.Error("slow request still pending after stop")
	}
}

func TestServeAllClosedListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if err := httpecho.ServeAll(t.Context(), ln, tag, nil); err == nil {
		t.Error("ServeAll on a closed listener returned nil")
	}
}

func TestSelfSignedTLS(t *testing.T) {
	cfg, certPEM, keyPEM, err := httpecho.SelfSignedTLS("example.test", "10.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Certificates) != 1 || !slices.Equal(cfg.NextProtos, []string{"h2", "http/1.1"}) {
		t.Errorf("config: %d certificates, ALPN %q", len(cfg.Certificates), cfg.NextProtos)
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Errorf("PEM pair: %v", err)
	}
	leaf := cfg.Certificates[0].Leaf
	if err := leaf.VerifyHostname("example.test"); err != nil {
		t.Error(err)
	}
	if err := leaf.VerifyHostname("10.0.0.1"); err != nil {
		t.Error(err)
	}
	if _, err := httpecho.ClientTLS([]byte("not PEM")); err == nil {
		t.Error("ClientTLS accepted garbage")
	}
}
