package annotations

import (
	"errors"
	"testing"
)

// TestValuesPinned pins the strings and ports that live in users' manifests
// and running pods: changing one breaks installed workloads.
func TestValuesPinned(t *testing.T) {
	for got, want := range map[string]string{
		Inject:               "detour.dev/inject",
		InjectEnabled:        "enabled",
		AgentImage:           "detour.dev/agent-image",
		Container:            "detour.dev/container",
		Ports:                "detour.dev/ports",
		TerminatingTLSSecret: "detour.dev/terminating-tls-secret",
		OriginatingTLSSecret: "detour.dev/originating-tls-secret",
		Injected:             "detour.dev/injected",
		AgentContainerName:   "detour-agent",
		InitContainerName:    "detour-init",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	if TunnelPort != 9900 || HealthPort != 9901 || MetricsPort != 9902 || RedirectPort != 15001 {
		t.Errorf("agent ports changed: %d %d %d %d", TunnelPort, HealthPort, MetricsPort, RedirectPort)
	}
}

func TestStatusRoundTrip(t *testing.T) {
	in := Status{Mode: ModeRename, Container: "app", Ports: []PortMap{{Name: "http", AppPort: 8080, AgentPort: 15080}}}
	out, err := ParseStatus(in.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if out.Mode != in.Mode || out.Container != in.Container || len(out.Ports) != 1 || out.Ports[0] != in.Ports[0] {
		t.Fatalf("round trip: got %+v, want %+v", out, in)
	}
	if got := out.AppPorts(); len(got) != 1 || got[0] != 8080 {
		t.Fatalf("AppPorts = %v", got)
	}
}

func TestParseStatusRejects(t *testing.T) {
	for _, v := range []string{"", "yes", `{"mode":"sideways"}`, `[]`} {
		if _, err := ParseStatus(v); !errors.Is(err, ErrBadStatus) {
			t.Errorf("ParseStatus(%q) = %v, want ErrBadStatus", v, err)
		}
	}
}
