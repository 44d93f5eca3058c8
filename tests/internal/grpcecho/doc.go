// Package grpcecho is a gRPC echo service for detour's HTTP-routing tests,
// written without protoc-generated code: messages are raw bytes carried by
// the "raw" codec (Codec), and the service is described by a hand-written
// grpc.ServiceDesc.
//
// The service is "detour.test.Echo" with two methods:
//
//   - Unary: answers a request with Reply(tag, request).
//   - Bidi: a bidirectional stream that answers each message with
//     Reply(tag, message) until the client closes its send side.
//
// Both methods also send the server's tag as the response header metadata
// TagHeader, so a test can tell which backend answered without parsing the
// body.
//
// Requests carry Content-Type ContentType ("application/grpc+raw"); a proxy
// that routes gRPC by Content-Type prefix "application/grpc" sees them as
// gRPC.
//
// A client adds request metadata (HTTP/2 headers) through its context:
//
//	ctx = metadata.AppendToOutgoingContext(ctx, "x-route", "canary")
//	reply, err := grpcecho.Unary(ctx, conn, []byte("hi"))
//
// and reads the response headers with the grpc.Header call option:
//
//	var md metadata.MD
//	reply, err := grpcecho.Unary(ctx, conn, []byte("hi"), grpc.Header(&md))
//	tag := md.Get(grpcecho.TagHeader)
package grpcecho
