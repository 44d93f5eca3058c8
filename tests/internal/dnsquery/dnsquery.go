// Package dnsquery sends one DNS query to one server and reports the reply's
// response code and records: the local cluster's DNS checks use it on the
// host (tests/internal/cluster, the e2e tests) and inside pods (the echo
// image's dns mode), where the exact response code matters (NXDOMAIN, not
// just "not found").
package dnsquery

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

// Result is the part of a reply the checks look at.
type Result struct {
	RCode         dnsmessage.RCode
	Authoritative bool
	// Answers are the answer section's addresses (A, AAAA) and names
	// (PTR, CNAME, with the final dot), in the order of the reply.
	Answers []string
}

// RCodeName is the response code as dig prints it: NOERROR, NXDOMAIN, ...
func (r Result) RCodeName() string {
	switch r.RCode {
	case dnsmessage.RCodeSuccess:
		return "NOERROR"
	case dnsmessage.RCodeFormatError:
		return "FORMERR"
	case dnsmessage.RCodeServerFailure:
		return "SERVFAIL"
	case dnsmessage.RCodeNameError:
		return "NXDOMAIN"
	case dnsmessage.RCodeNotImplemented:
		return "NOTIMP"
	case dnsmessage.RCodeRefused:
		return "REFUSED"
	}
	return r.RCode.String()
}

// Query asks server (host:port) over network ("udp" or "tcp") for the
// records of type qtype of name, taken as absolute (a final dot is added).
// The context's deadline bounds the whole exchange.
func Query(ctx context.Context, network, server, name string, qtype dnsmessage.Type) (Result, error) {
	q, id, err := pack(name, qtype)
	if err != nil {
		return Result{}, err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, server)
	if err != nil {
		return Result{}, fmt.Errorf("dial %s %s: %w", network, server, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	resp, err := exchange(c, network, q)
	if err != nil {
		return Result{}, fmt.Errorf("query %s %s at %s/%s: %w", name, qtype, server, network, err)
	}
	var m dnsmessage.Message
	if err := m.Unpack(resp); err != nil {
		return Result{}, fmt.Errorf("parse reply from %s: %w", server, err)
	}
	if !m.Response || m.ID != id {
		return Result{}, fmt.Errorf("reply from %s: response %v, id %d, want id %d", server, m.Response, m.ID, id)
	}
	return result(m), nil
}

func pack(name string, qtype dnsmessage.Type) ([]byte, uint16, error) {
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	qn, err := dnsmessage.NewName(name)
	if err != nil {
		return nil, 0, fmt.Errorf("name %q: %w", name, err)
	}
	id := uint16(rand.Uint32())
	m := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: qn, Type: qtype, Class: dnsmessage.ClassINET}},
	}
	b, err := m.Pack()
	if err != nil {
		return nil, 0, fmt.Errorf("pack query for %s: %w", name, err)
	}
	return b, id, nil
}

// exchange writes the query and reads one reply: a datagram over UDP, a
// length-prefixed message over TCP (RFC 1035 4.2.2).
func exchange(c net.Conn, network string, q []byte) ([]byte, error) {
	if !strings.HasPrefix(network, "tcp") {
		if _, err := c.Write(q); err != nil {
			return nil, err
		}
		buf := make([]byte, 65535)
		n, err := c.Read(buf)
		return buf[:n], err
	}
	if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)); err != nil {
		return nil, err
	}
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return nil, err
	}
	resp := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(c, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

func result(m dnsmessage.Message) Result {
	r := Result{RCode: m.RCode, Authoritative: m.Authoritative}
	for _, a := range m.Answers {
		switch b := a.Body.(type) {
		case *dnsmessage.AResource:
			r.Answers = append(r.Answers, netip.AddrFrom4(b.A).String())
		case *dnsmessage.AAAAResource:
			r.Answers = append(r.Answers, netip.AddrFrom16(b.AAAA).String())
		case *dnsmessage.PTRResource:
			r.Answers = append(r.Answers, b.PTR.String())
		case *dnsmessage.CNAMEResource:
			r.Answers = append(r.Answers, b.CNAME.String())
		}
	}
	return r
}

// ReverseName is the PTR query name of an address: 4.3.2.1.in-addr.arpa.
// for 1.2.3.4, the nibble form under ip6.arpa. for IPv6.
func ReverseName(addr string) (string, error) {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return "", fmt.Errorf("reverse name: %w", err)
	}
	var b strings.Builder
	if ip.Is4() {
		a := ip.As4()
		fmt.Fprintf(&b, "%d.%d.%d.%d.in-addr.arpa.", a[3], a[2], a[1], a[0])
		return b.String(), nil
	}
	if !ip.Is6() {
		return "", errors.New("reverse name: not an IP address")
	}
	a := ip.As16()
	for i := len(a) - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "%x.%x.", a[i]&0xf, a[i]>>4)
	}
	b.WriteString("ip6.arpa.")
	return b.String(), nil
}
