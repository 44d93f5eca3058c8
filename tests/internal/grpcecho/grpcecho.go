package grpcecho

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// Names of the service and the full method names a client calls.
const (
	ServiceName = "detour.test.Echo"
	UnaryMethod = "/" + ServiceName + "/Unary"
	BidiMethod  = "/" + ServiceName + "/Bidi"
)

// TagHeader is the response header metadata key that carries the server's tag.
const TagHeader = "x-detour-tag"

// Reply is the server's answer to msg: tag, a space, then msg.
func Reply(tag string, msg []byte) []byte {
	out := make([]byte, 0, len(tag)+1+len(msg))
	out = append(out, tag...)
	out = append(out, ' ')
	return append(out, msg...)
}

// echoService is the HandlerType of serviceDesc: RegisterService checks the
// implementation against it.
type echoService interface {
	tag() string
}

type server struct{ t string }

func (s *server) tag() string { return s.t }

var serviceDesc = grpc.ServiceDesc{
	ServiceName: ServiceName,
	HandlerType: (*echoService)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Unary",
		Handler:    unaryHandler,
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Bidi",
		Handler:       bidiHandler,
		ServerStreams: true,
		ClientStreams: true,
	}},
}

// bidiDesc is what a client passes to NewStream for Bidi.
var bidiDesc = grpc.StreamDesc{StreamName: "Bidi", ServerStreams: true, ClientStreams: true}

// NewServer returns a gRPC server with the echo service registered, answering
// with tag. It forces Codec for every call, so the request's content-subtype
// does not matter. opts are added after that, e.g.
// grpc.Creds(credentials.NewTLS(cfg)) to serve TLS; without credentials it
// serves HTTP/2 in cleartext (h2c with prior knowledge). The caller runs
// Serve(listener), or hands HTTP/2 requests to ServeHTTP, and Stops it.
func NewServer(tag string, opts ...grpc.ServerOption) *grpc.Server {
	opts = append([]grpc.ServerOption{grpc.ForceServerCodecV2(Codec{})}, opts...)
	s := grpc.NewServer(opts...)
	s.RegisterService(&serviceDesc, &server{t: tag})
	return s
}

func unaryHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	var msg []byte
	if err := dec(&msg); err != nil {
		return nil, err
	}
	tag := srv.(echoService).tag()
	handle := func(ctx context.Context, req any) (any, error) {
		if err := grpc.SetHeader(ctx, metadata.Pairs(TagHeader, tag)); err != nil {
			return nil, err
		}
		return Reply(tag, *req.(*[]byte)), nil
	}
	if interceptor == nil {
		return handle(ctx, &msg)
	}
	return interceptor(ctx, &msg, &grpc.UnaryServerInfo{Server: srv, FullMethod: UnaryMethod}, handle)
}

func bidiHandler(srv any, stream grpc.ServerStream) error {
	tag := srv.(echoService).tag()
	if err := stream.SetHeader(metadata.Pairs(TagHeader, tag)); err != nil {
		return err
	}
	for {
		var msg []byte
		err := stream.RecvMsg(&msg)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.SendMsg(Reply(tag, msg)); err != nil {
			return err
		}
	}
}

// NewClient returns a client connection to target ("host:port"): over TLS
// with tlsCfg, or in cleartext HTTP/2 (h2c with prior knowledge) when tlsCfg
// is nil. opts are added after the credentials, e.g. grpc.WithAuthority to
// set the :authority a proxy routes on. The caller closes the connection.
func NewClient(target string, tlsCfg *tls.Config, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if tlsCfg != nil {
		creds = credentials.NewTLS(tlsCfg)
	}
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, opts...)
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("grpcecho client for %s: %w", target, err)
	}
	return conn, nil
}

// Unary calls Unary with msg and returns the reply. Request metadata comes
// from ctx (metadata.AppendToOutgoingContext); opts are added to the call,
// e.g. grpc.Header(&md) to read the response headers.
func Unary(ctx context.Context, conn grpc.ClientConnInterface, msg []byte, opts ...grpc.CallOption) ([]byte, error) {
	var reply []byte
	opts = append([]grpc.CallOption{grpc.ForceCodecV2(Codec{})}, opts...)
	if err := conn.Invoke(ctx, UnaryMethod, msg, &reply, opts...); err != nil {
		return nil, fmt.Errorf("grpcecho unary: %w", err)
	}
	return reply, nil
}

// Bidi opens a Bidi stream, sends each of msgs and receives its reply before
// sending the next, then closes its send side and waits for the server to end
// the stream. It returns the replies received, also on error. Metadata and
// opts are as for Unary.
func Bidi(ctx context.Context, conn grpc.ClientConnInterface, msgs [][]byte, opts ...grpc.CallOption) ([][]byte, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream if we return early
	opts = append([]grpc.CallOption{grpc.ForceCodecV2(Codec{})}, opts...)
	stream, err := conn.NewStream(ctx, &bidiDesc, BidiMethod, opts...)
	if err != nil {
		return nil, fmt.Errorf("grpcecho bidi: open stream: %w", err)
	}
	replies := make([][]byte, 0, len(msgs))
	for i, msg := range msgs {
		if err := stream.SendMsg(msg); err != nil {
			// The server's status, if any, comes from RecvMsg.
			if errors.Is(err, io.EOF) {
				if rerr := stream.RecvMsg(new([]byte)); rerr != nil {
					err = rerr
				}
			}
			return replies, fmt.Errorf("grpcecho bidi: send message %d: %w", i, err)
		}
		var reply []byte
		if err := stream.RecvMsg(&reply); err != nil {
			return replies, fmt.Errorf("grpcecho bidi: receive reply %d: %w", i, err)
		}
		replies = append(replies, reply)
	}
	if err := stream.CloseSend(); err != nil {
		return replies, fmt.Errorf("grpcecho bidi: close send: %w", err)
	}
	var extra []byte
	switch err := stream.RecvMsg(&extra); {
	case errors.Is(err, io.EOF):
		return replies, nil
	case err != nil:
		return replies, fmt.Errorf("grpcecho bidi: end of stream: %w", err)
	default:
		return replies, fmt.Errorf("grpcecho bidi: unexpected message after close: %q", extra)
	}
}
