package proxynet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/miekg/dns"

	"github.com/detour-dev/detour/internal/addrset"
)

// StubResolver looks host names up as a stub resolver reading a
// resolv.conf with the pod's search path and ndots does (glibc, Go's own
// resolver), over a function that answers one DNS query — the cluster
// network's resolver (*clusternet.Net.Resolve). A name with fewer dots than
// Ndots tries each search domain first and then itself ("db" →
// db.shop.svc.cluster.local first); one with at least Ndots dots tries
// itself first; a rooted name ("db.shop.svc.cluster.local.") only itself.
// Each candidate asks for A and AAAA; the first that has an address wins.
// localhost and *.localhost are loopback (RFC 6761) without a query.
type StubResolver struct {
	Resolve func(ctx context.Context, q *dns.Msg) *dns.Msg
	Search  []string
	Ndots   int // below 1: 1, as in resolv.conf
}

// LookupHost returns name's addresses, IPv4 first; an error wrapping
// ErrNotFound when every candidate is NXDOMAIN or has no address.
func (r *StubResolver) LookupHost(ctx context.Context, name string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(name); err == nil {
		return []netip.Addr{a}, nil
	}
	if isLocalhost(name) {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}, nil
	}
	if _, ok := dns.IsDomainName(name); !ok || name == "" || len(dns.Fqdn(name)) > 254 {
		return nil, fmt.Errorf("%q is not a host name: %w", name, ErrNotFound)
	}
	var failed error
	for _, fqdn := range r.candidates(name) {
		addrs, err := r.lookupFQDN(ctx, fqdn)
		if len(addrs) > 0 {
			return addrs, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("look %s up: %w", name, ctx.Err())
		}
		if err != nil && !errors.Is(err, ErrNotFound) {
			failed = err
		}
	}
	if failed != nil {
		return nil, fmt.Errorf("look %s up: %w", name, failed)
	}
	return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
}

// candidates are the names tried, in order (Go's dnsConfig.nameList).
func (r *StubResolver) candidates(name string) []string {
	if strings.HasSuffix(name, ".") {
		return []string{name}
	}
	ndots := r.Ndots
	if ndots < 1 {
		ndots = 1
	}
	fqdn := name + "."
	enough := strings.Count(name, ".") >= ndots
	var names []string
	if enough {
		names = append(names, fqdn)
	}
	for _, s := range r.Search {
		if s = strings.Trim(s, "."); s != "" && len(fqdn)+len(s)+1 <= 254 {
			names = append(names, fqdn+s+".")
		}
	}
	if !enough {
		names = append(names, fqdn)
	}
	return names
}

// lookupFQDN asks for fqdn's A and AAAA records at once.
func (r *StubResolver) lookupFQDN(ctx context.Context, fqdn string) ([]netip.Addr, error) {
	type result struct {
		addrs []netip.Addr
		err   error
	}
	qtypes := []uint16{dns.TypeA, dns.TypeAAAA}
	results := make([]chan result, len(qtypes))
	for i, qt := range qtypes {
		results[i] = make(chan result, 1)
		go func() {
			a, err := r.query(ctx, fqdn, qt)
			results[i] <- result{a, err}
		}()
	}
	var addrs []netip.Addr
	var errs []error
	for _, ch := range results {
		res := <-ch
		addrs = append(addrs, res.addrs...)
		if res.err != nil {
			errs = append(errs, res.err)
		}
	}
	if len(addrs) > 0 {
		return addrs, nil
	}
	return nil, errors.Join(errs...)
}

func (r *StubResolver) query(ctx context.Context, fqdn string, qtype uint16) ([]netip.Addr, error) {
	q := new(dns.Msg)
	q.SetQuestion(fqdn, qtype)
	a := r.Resolve(ctx, q)
	switch {
	case a == nil:
		return nil, fmt.Errorf("%s: no answer", fqdn)
	case a.Rcode == dns.RcodeNameError:
		return nil, fmt.Errorf("%s: NXDOMAIN: %w", fqdn, ErrNotFound)
	case a.Rcode != dns.RcodeSuccess:
		return nil, fmt.Errorf("%s: the resolver answered %s", fqdn, dns.RcodeToString[a.Rcode])
	}
	var addrs []netip.Addr
	for _, ans := range addrset.Answers(a.Answer) {
		if ans.Type == qtype {
			addrs = append(addrs, ans.Addr)
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%s has no %s record: %w", fqdn, dns.TypeToString[qtype], ErrNotFound)
	}
	return addrs, nil
}

func isLocalhost(name string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	return name == "localhost" || strings.HasSuffix(name, ".localhost")
}
