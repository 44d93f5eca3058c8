package tunnel

import (
	"errors"
	"fmt"
)

// RemoteError is an error that the peer reported in a FrameError. It matches
// the sentinel of its code: errors.Is(err, ErrAlreadyIntercepted).
type RemoteError struct {
	Code    ErrorCode
	Message string
}

func (e *RemoteError) Error() string { return e.Message }

// Is lets errors.Is match a RemoteError against the sentinel of its code.
func (e *RemoteError) Is(target error) bool {
	s, ok := codeErrors[e.Code]
	return ok && s == target
}

// CodeOf maps an error to the code sent for it: the code of the first
// sentinel it wraps, else CodeInternal.
func CodeOf(err error) ErrorCode {
	var re *RemoteError
	if errors.As(err, &re) {
		return re.Code
	}
	// In code order, so an error wrapping two sentinels always gets the same code.
	for code := CodeBadRequest; code <= lastCode; code++ {
		if errors.Is(err, codeErrors[code]) {
			return code
		}
	}
	return CodeInternal
}

// ErrorFrame builds the FrameError that answers request id with err.
func ErrorFrame(id uint32, err error) Frame {
	f, encErr := NewFrame(FrameError, id, ErrorPayload{Code: CodeOf(err), Message: err.Error()})
	if encErr != nil {
		// Only a message over MaxControlPayload gets here; send its code alone.
		f, _ = NewFrame(FrameError, id, ErrorPayload{Code: CodeOf(err), Message: fmt.Sprintf("error message too long (%d bytes)", len(err.Error()))})
	}
	return f
}

// AsError turns a received FrameError into a *RemoteError.
func AsError(f Frame) error {
	var p ErrorPayload
	if err := f.Decode(&p); err != nil {
		return err
	}
	return &RemoteError{Code: p.Code, Message: p.Message}
}
