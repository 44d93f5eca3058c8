package agent

import (
	"bytes"
	"errors"
	"net"
	"testing"

	"github.com/detour-dev/detour/agent/internal/nftrules"
)

// TestInitDryRunIsThePlan: --dry-run prints the plan that would be applied,
// rendered from the same data, probe ports included.
func TestInitDryRunIsThePlan(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := Main(t.Context(), []string{"init", "--ports", "8080,9090", "--probe-ports", "15100:8080", "--dry-run"}, &out, &errOut); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	plan, err := nftrules.NewPlan(nftrules.Options{AppPorts: []uint16{8080, 9090}, AgentPort: 15001, IPv6: true,
		ProbePorts: []nftrules.ProbePort{{Port: 15100, AppPort: 8080}}})
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != plan.String() {
		t.Fatalf("dry-run printed:\n%s\nwant:\n%s", out.String(), plan)
	}
	for _, bad := range []string{"15100", "15100:", "x:8080", "15100:70000", "15100:8081"} {
		err := Main(t.Context(), []string{"init", "--ports", "8080", "--probe-ports", bad, "--dry-run"}, &out, &errOut)
		if !errors.Is(err, ErrUsage) {
			t.Errorf("--probe-ports %q: err = %v, want a usage error", bad, err)
		}
	}
}

func TestHasGlobalIPv6(t *testing.T) {
	cidr := func(s string) net.Addr {
		ip, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		n.IP = ip
		return n
	}
	v4 := []net.Addr{cidr("127.0.0.1/8"), cidr("::1/128"), cidr("10.244.0.7/24"), cidr("fe80::1/64")}
	if hasGlobalIPv6(v4) {
		t.Fatalf("%v: an IPv4-only pod (loopback and link-local IPv6 only) has no IPv6 address", v4)
	}
	for _, a := range []string{"fd00:10:244::7/64", "2001:db8::7/64"} {
		if !hasGlobalIPv6(append(v4, cidr(a))) {
			t.Errorf("%s: a pod IPv6 address not seen", a)
		}
	}
}
