package agent

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/detour-dev/detour/internal/addrset"
	"github.com/detour-dev/detour/tunnel"
)

// dnsTimeout bounds one exchange with one of the pod's nameservers.
const dnsTimeout = 2 * time.Second

// readResolvConf reads the pod's resolv.conf (the kubelet writes the same
// one into every container of the pod). A missing file is no nameservers.
func readResolvConf(path string) (tunnel.ResolvConf, error) {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return tunnel.ResolvConf{Ndots: 1}, nil
		}
		return tunnel.ResolvConf{}, fmt.Errorf("read %s: %w", path, err)
	}
	return tunnel.ResolvConf{Nameservers: cc.Servers, Search: cc.Search, Ndots: cc.Ndots}, nil
}

// serveDNS answers the DNS queries of one StreamDNS stream, in order, with
// the pod's own nameservers, and remembers the addresses they return as
// cluster destinations (egress.go). The client applies the pod's search
// path and ndots; each query here is one fully qualified question.
func (a *Agent) serveDNS(st net.Conn, log *zap.Logger) {
	buf := make([]byte, tunnel.MaxDNSMessage)
	for {
		_ = st.SetReadDeadline(time.Now().Add(udpIdleTimeout))
		p, err := tunnel.ReadMessage(st, buf)
		if err != nil {
			return
		}
		q := new(dns.Msg)
		if err := q.Unpack(p); err != nil || len(q.Question) != 1 {
			a.m.dnsQueries.WithLabelValues("bad_query").Inc()
			log.Debug("malformed DNS query from client", zap.Error(err))
			return
		}
		r := a.exchange(q)
		out, err := r.Pack()
		if err != nil {
			a.m.dnsQueries.WithLabelValues("bad_answer").Inc()
			out, _ = servfail(q).Pack()
		}
		if tunnel.WriteMessage(st, out) != nil {
			return
		}
	}
}

// exchange asks each of the pod's nameservers in turn (UDP, then TCP when
// the answer was truncated); when none answers, the reply is SERVFAIL.
func (a *Agent) exchange(q *dns.Msg) *dns.Msg {
	servers := a.resolv.Nameservers
	if len(servers) == 0 {
		a.m.dnsQueries.WithLabelValues("no_nameserver").Inc()
		return servfail(q)
	}
	udp := &dns.Client{Net: "udp", Timeout: dnsTimeout, UDPSize: dns.DefaultMsgSize}
	tcp := &dns.Client{Net: "tcp", Timeout: dnsTimeout}
	for _, s := range servers {
		addr := net.JoinHostPort(s, strconv.Itoa(a.dnsPort))
		r, _, err := udp.Exchange(q, addr)
		if err == nil && r.Truncated {
			r, _, err = tcp.Exchange(q, addr)
		}
		if err != nil {
			continue
		}
		a.learn(q, r)
		a.m.dnsQueries.WithLabelValues(dns.RcodeToString[r.Rcode]).Inc()
		return r
	}
	a.m.dnsQueries.WithLabelValues("unanswered").Inc()
	return servfail(q)
}

// learn records the addresses in an answer as cluster destinations — only
// for a question in the cluster's domain, and only records whose own name
// is in it. The client chooses the question: an answer the pod's
// nameserver forwarded upstream (203.0.113.9.nip.io, any domain the
// client controls) must not make an outside address a "cluster"
// destination, nor must an ExternalName Service's CNAME target. Without a
// cluster domain in the search path nothing is learned: the cluster
// ranges alone decide. Pod records (A-B-C-D.NS.pod.DOMAIN) teach nothing
// either: CoreDNS answers them from the name (addrset.Teaches).
func (a *Agent) learn(q, r *dns.Msg) {
	if len(q.Question) != 1 || !addrset.InDomain(q.Question[0].Name, a.clusterDomain) {
		return
	}
	for _, rr := range r.Answer {
		if !addrset.Teaches(rr.Header().Name, a.clusterDomain) {
			continue
		}
		for _, ans := range addrset.Answers([]dns.RR{rr}) {
			a.learned.Add(ans.Addr, ans.TTL)
		}
	}
}

func servfail(q *dns.Msg) *dns.Msg {
	r := new(dns.Msg)
	r.SetRcode(q, dns.RcodeServerFailure)
	return r
}
