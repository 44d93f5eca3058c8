package grpcecho

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
)

// CodecName is the name of Codec, and so the gRPC content-subtype of this
// package's requests.
const CodecName = "raw"

// ContentType is the Content-Type of this package's requests.
const ContentType = "application/grpc+" + CodecName

// Codec is a gRPC codec whose messages are raw bytes: it marshals []byte or
// *[]byte and unmarshals into *[]byte.
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// Name returns CodecName.
func (Codec) Name() string { return CodecName }

// Marshal returns a copy of v, which must be []byte or *[]byte. It copies
// because gRPC may still be sending the message after the caller reuses v.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	var b []byte
	switch m := v.(type) {
	case []byte:
		b = m
	case *[]byte:
		b = *m
	default:
		return nil, fmt.Errorf("raw codec: cannot marshal %T, want []byte", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(append([]byte(nil), b...))}, nil
}

// Unmarshal stores a copy of data in v, which must be *[]byte (gRPC frees
// data when Unmarshal returns).
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T, want *[]byte", v)
	}
	*p = data.Materialize()
	return nil
}
