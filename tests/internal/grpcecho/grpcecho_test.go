package grpcecho_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"

	"github.com/detour-dev/detour/tests/internal/grpcecho"
	"github.com/detour-dev/detour/tests/internal/httpecho"
)

// mdRecorder is a pair of server interceptors that keep the incoming
// metadata of each call, keyed by full method name.
type mdRecorder struct {
	mu sync.Mutex
	md map[string]metadata.MD
}

func (r *mdRecorder) record(ctx context.Context, method string) {
	md, _ := metadata.FromIncomingContext(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.md[method] = md
}

func (r *mdRecorder) get(method string) metadata.MD {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.md[method]
}

func (r *mdRecorder) options() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			r.record(ctx, info.FullMethod)
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			r.record(ss.Context(), info.FullMethod)
			return h(srv, ss)
		}),
	}
}

// serve runs a server on 127.0.0.1:0 until the test ends and returns its
// address.
func serve(t *testing.T, s *grpc.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Stop()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

func TestEcho(t *testing.T) {
	serverTLS, certPEM, _, err := httpecho.SelfSignedTLS("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	clientTLS, err := httpecho.ClientTLS(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		serverTLS *tls.Config
		clientTLS *tls.Config
	}{
		{name: "h2c"},
		{name: "tls", serverTLS: serverTLS, clientTLS: clientTLS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const tag = "backend-a"
			rec := &mdRecorder{md: map[string]metadata.MD{}}
			opts := rec.options()
			if tc.serverTLS != nil {
				opts = append(opts, grpc.Creds(credentials.NewTLS(tc.serverTLS)))
			}
			addr := serve(t, grpcecho.NewServer(tag, opts...))
			conn, err := grpcecho.NewClient(addr, tc.clientTLS)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			ctx = metadata.AppendToOutgoingContext(ctx, "x-route", tc.name)

			var header metadata.MD
			reply, err := grpcecho.Unary(ctx, conn, []byte("hello"), grpc.Header(&header))
			if err != nil {
				t.Fatalf("Unary: %v", err)
			}
			if want := "backend-a hello"; string(reply) != want {
				t.Errorf("Unary reply = %q, want %q", reply, want)
			}
			if got := header.Get(grpcecho.TagHeader); len(got) != 1 || got[0] != tag {
				t.Errorf("Unary header %s = %q, want [%q]", grpcecho.TagHeader, got, tag)
			}
			if got := rec.get(grpcecho.UnaryMethod).Get("x-route"); len(got) != 1 || got[0] != tc.name {
				t.Errorf("server saw Unary x-route = %q, want [%q]", got, tc.name)
			}
			if ct := rec.get(grpcecho.UnaryMethod).Get("content-type"); len(ct) != 1 || ct[0] != grpcecho.ContentType {
				t.Errorf("server saw content-type %q, want [%q]", ct, grpcecho.ContentType)
			}

			msgs := [][]byte{[]byte("one"), {}, []byte("three"), bytes.Repeat([]byte{0xff}, 100_000)}
			header = nil
			replies, err := grpcecho.Bidi(ctx, conn, msgs, grpc.Header(&header))
			if err != nil {
				t.Fatalf("Bidi: %v", err)
			}
			if len(replies) != len(msgs) {
				t.Fatalf("Bidi got %d replies, want %d", len(replies), len(msgs))
			}
			for i, m := range msgs {
				if want := grpcecho.Reply(tag, m); !bytes.Equal(replies[i], want) {
					t.Errorf("Bidi reply %d = %.40q, want %.40q", i, replies[i], want)
				}
			}
			if got := header.Get(grpcecho.TagHeader); len(got) != 1 || got[0] != tag {
				t.Errorf("Bidi header %s = %q, want [%q]", grpcecho.TagHeader, got, tag)
			}
			if got := rec.get(grpcecho.BidiMethod).Get("x-route"); len(got) != 1 || got[0] != tc.name {
				t.Errorf("server saw Bidi x-route = %q, want [%q]", got, tc.name)
			}

			replies, err = grpcecho.Bidi(ctx, conn, nil)
			if err != nil || len(replies) != 0 {
				t.Errorf("Bidi with no messages = %q, %v; want none, nil", replies, err)
			}
		})
	}
}

func TestCodec(t *testing.T) {
	var c grpcecho.Codec
	if c.Name() != "raw" {
		t.Errorf("Name = %q", c.Name())
	}
	src := []byte("abc")
	for _, v := range []any{src, &src} {
		out, err := c.Marshal(v)
		if err != nil {
			t.Fatalf("Marshal(%T): %v", v, err)
		}
		src[0] = 'X' // the marshalled message must not alias the caller's slice
		if got := out.Materialize(); string(got) != "abc" {
			t.Errorf("Marshal(%T) = %q, want %q", v, got, "abc")
		}
		src[0] = 'a'
	}
	if _, err := c.Marshal("abc"); err == nil {
		t.Error("Marshal(string) succeeded")
	}
	var got []byte
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer("xyz")}, &got); err != nil || string(got) != "xyz" {
		t.Errorf("Unmarshal = %q, %v", got, err)
	}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer("xyz")}, got); err == nil {
		t.Error("Unmarshal into []byte succeeded")
	}
}
