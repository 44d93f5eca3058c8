package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// A StreamMirrored stream carries, after its header (an InterceptedHeader),
// the client→app bytes of one connection as chunks: a u32 length and that
// many bytes (1..MaxMirrorChunk). A chunk of length 0 ends the copy whole:
// the connection ended and every byte it carried was sent. A stream that
// ends without it was cut off by the agent (the workstation fell behind).
// The client sends nothing back.

// AppendMirrorChunk appends p (1..MaxMirrorChunk bytes) framed as one
// chunk to dst; an empty p appends the end chunk.
func AppendMirrorChunk(dst, p []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(p)))
	return append(dst, p...)
}

// ReadMirrorChunk reads one chunk into buf (at least MaxMirrorChunk bytes)
// and returns its bytes; end is true for the end chunk. A stream that ends
// between chunks without the end chunk is ErrMirrorCut.
func ReadMirrorChunk(r io.Reader, buf []byte) (chunk []byte, end bool, err error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, false, ErrMirrorCut
		}
		return nil, false, fmt.Errorf("read mirror chunk: %w", noEOF(err))
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 {
		return nil, true, nil
	}
	if n > MaxMirrorChunk || int(n) > len(buf) {
		return nil, false, fmt.Errorf("mirror chunk of %d bytes (limit %d): %w", n, MaxMirrorChunk, ErrFrameTooLarge)
	}
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		return nil, false, fmt.Errorf("read mirror chunk: %w", noEOF(err))
	}
	return buf[:n], false, nil
}
