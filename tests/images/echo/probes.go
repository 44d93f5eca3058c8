package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"log"
	"net"
	"strconv"
	"time"
)

// serveUDP answers each datagram with "pod=POD peer=IP": who answered and
// where the datagram came from.
func serveUDP(pc net.PacketConn, pod string) {
	buf := make([]byte, 2048)
	for {
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		ip := from.(*net.UDPAddr).AddrPort().Addr().Unmap()
		if _, err := pc.WriteTo(fmt.Appendf(nil, "pod=%s peer=%s", pod, ip), from); err != nil {
			log.Printf("udp: %v", err)
		}
	}
}

// udpProbe is the client mode "echo udp ADDR": one datagram, and the
// answer printed (retried a few times: UDP may drop one).
func udpProbe(addr string) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 2048)
	for try := 0; try < 5; try++ {
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if err == nil {
			fmt.Println(string(buf[:n]))
			return nil
		}
	}
	return fmt.Errorf("no answer from %s in 5 tries", addr)
}

// bulkProbe is the client mode "echo bulk ADDR SIZE": SIZE pseudo-random
// bytes to a TCP echo port and back, compared by sha256; prints
// "sha256 equal SIZE".
func bulkProbe(addr, sizeArg string) error {
	size, err := strconv.ParseInt(sizeArg, 10, 64)
	if err != nil {
		return fmt.Errorf("size %q: %w", sizeArg, err)
	}
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	sent := sha256.New()
	errc := make(chan error, 1)
	go func() {
		src := io.LimitReader(&pattern{}, size)
		_, err := io.Copy(io.MultiWriter(c, sent), src)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	got := sha256.New()
	n, err := io.Copy(got, c)
	if err != nil {
		return err
	}
	if err := <-errc; err != nil {
		return err
	}
	if n != size || !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		return fmt.Errorf("got %d bytes back of %d, sha256 %x, sent %x", n, size, got.Sum(nil), sent.Sum(nil))
	}
	fmt.Println("sha256 equal", size)
	return nil
}

// pattern is an endless, cheap, non-repeating-per-block byte source.
type pattern struct{ n uint64 }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		p.n = p.n*6364136223846793005 + 1442695040888963407
		b[i] = byte(p.n >> 56)
	}
	return len(b), nil
}
