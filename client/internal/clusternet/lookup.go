package clusternet

// DNSSearch is the pod's search path and ndots (1 when the pod gives none),
// as ResolvConf writes them: what a stub resolver outside the namespace
// (the proxy fallback's) needs to expand names exactly as in the pod.
func (n *Net) DNSSearch() (search []string, ndots int) {
	ndots = n.cfg.Pod.DNS.Ndots
	if ndots <= 0 {
		ndots = 1
	}
	return append([]string(nil), n.cfg.Pod.DNS.Search...), ndots
}
