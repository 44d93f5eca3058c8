//go:build !linux

package netstack

import (
	"errors"
	"runtime"
)

// ErrUnsupported: the stack reads a Linux TUN device.
var ErrUnsupported = errors.New("the userspace network stack on a TUN device needs Linux (here: " + runtime.GOOS + ")")

// Stack is not available off Linux.
type Stack struct{}

// New explains that this needs Linux.
func New(Config) (*Stack, error) { return nil, ErrUnsupported }

// Close does nothing off Linux.
func (*Stack) Close() {}
