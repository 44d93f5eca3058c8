//go:build linux

package nsexec

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/detour-dev/detour/tunnel"
)

// The forward socket's protocol: the caller writes the port (u16), the
// first process dials 127.0.0.1:PORT (then [::1]:PORT) inside the
// namespace and answers one byte, forwardOK or forwardRefused; then raw
// bytes. The host socket speaks the same protocol the other way: the
// first process asks, detour dials the workstation's 127.0.0.1:PORT.
const (
	forwardOK      byte = 0
	forwardRefused byte = 1
)

// forwards are the relays into the namespace in progress: when the
// command exits, the first process lets them finish (at most drainTimeout)
// before it exits and the kernel ends the namespace, so a command that
// answers and exits has its answer delivered.
var forwards sync.WaitGroup

const drainTimeout = 5 * time.Second

// serveForwards accepts on the unix socket at path, in the background,
// for as long as the process lives.
func serveForwards(path string) error {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("forward socket %s: %w", path, err)
	}
	go serveTracked(ln, func(c net.Conn) { answerPort(c, dialInside) })
	return nil
}

// serveTracked handles each connection ln accepts in its own goroutine,
// counted in forwards (drainForwards waits for them), until ln closes.
func serveTracked(ln net.Listener, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		forwards.Add(1)
		go func() {
			defer forwards.Done()
			handle(c)
		}()
	}
}

// drainForwards waits for the relays in progress, at most drainTimeout.
func drainForwards() {
	done := make(chan struct{})
	go func() { forwards.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(drainTimeout):
	}
}

// answerPort reads the port c asks for, dials it and answers forwardOK
// (then relays) or forwardRefused.
func answerPort(c net.Conn, dial func(port string) (net.Conn, error)) {
	defer c.Close()
	var p [2]byte
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, p[:]); err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	target, err := dial(strconv.Itoa(int(binary.BigEndian.Uint16(p[:]))))
	if err != nil {
		_, _ = c.Write([]byte{forwardRefused})
		return
	}
	if _, err := c.Write([]byte{forwardOK}); err != nil {
		target.Close()
		return
	}
	tunnel.Join(c, target)
}

// dialForward connects to 127.0.0.1:port inside the namespace through the
// first process's forward socket.
func dialForward(ctx context.Context, socket string, port uint16) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("reach the command's namespace: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	var p [2]byte
	binary.BigEndian.PutUint16(p[:], port)
	var st [1]byte
	if _, err := c.Write(p[:]); err == nil {
		_, err = io.ReadFull(c, st[:])
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("reach port %d in the command's namespace: %w", port, err)
	}
	_ = c.SetDeadline(time.Time{})
	if st[0] != forwardOK {
		c.Close()
		return nil, fmt.Errorf("port %d: %w", port, ErrNothingListens)
	}
	return c, nil
}
