package cli

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/detour-dev/detour/client/internal/resolve"
)

func TestParsePorts(t *testing.T) {
	cases := []struct {
		name  string
		ports []string
		toPod []uint16
		want  []resolve.PortSpec
		err   string
	}{
		{"one, LOCAL alone", []string{"8080"}, nil, []resolve.PortSpec{{Local: 8080}}, ""},
		{"two", []string{"8080:http", "9091:9090"}, nil, []resolve.PortSpec{{Local: 8080, Service: "http"}, {Local: 9091, Service: "9090"}}, ""},
		{"several need SVCPORT", []string{"8080:http", "9090"}, nil, nil, `--port "9090": with several --port, each names its Service port`},
		{"a local port twice", []string{"8080:http", "8080:grpc"}, nil, nil, `--port "8080:http" and --port "8080:grpc" both send to local port 8080`},
		{"a Service port twice", []string{"8080:http", "8081:http"}, nil, nil, `both take Service port "http"`},
		{"a local port that is --to-pod", []string{"5432:db"}, []uint16{5432}, nil, "--to-pod 5432: local port 5432 cannot be both"},
		{"a bad one among good ones", []string{"8080:http", "x:grpc"}, nil, nil, "LOCAL must be a port number"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parsePorts(c.ports, c.toPod)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want %q", err, c.err)
				}
				if !errors.Is(err, ErrUsage) {
					t.Fatalf("%v: not a usage error (exit 2)", err)
				}
				return
			}
			if err != nil || len(got) != len(c.want) {
				t.Fatalf("got %v %v, want %v", got, err, c.want)
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Fatalf("got %v, want %v", got, c.want)
				}
			}
		})
	}
}

func TestPlanPorts(t *testing.T) {
	container := func(name string, ports ...corev1.ContainerPort) corev1.Container {
		return corev1.Container{Name: name, Ports: ports}
	}
	w := resolve.Workload{Kind: resolve.KindDeployment, Name: "web", Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{
		container("app", corev1.ContainerPort{Name: "web", ContainerPort: 8080}, corev1.ContainerPort{Name: "rpc", ContainerPort: 9090}),
		container("sidecar", corev1.ContainerPort{Name: "metrics", ContainerPort: 9100}),
	}}}}
	svc := corev1.Service{Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
		{Name: "http", Port: 80, TargetPort: intstr.FromString("web")},
		{Name: "grpc", Port: 9090, TargetPort: intstr.FromString("rpc")},
		{Name: "alt", Port: 8000, TargetPort: intstr.FromInt32(8080)},
		{Name: "metrics", Port: 9100, TargetPort: intstr.FromString("metrics")},
	}}}
	svc.Name = "web"
	spec := func(local uint16, service string) resolve.PortSpec {
		return resolve.PortSpec{Local: local, Service: service}
	}

	ports, served, err := planPorts(w, svc, []resolve.PortSpec{spec(8080, "http"), spec(9091, "9090")}, "")
	if err != nil || served != "app" || len(ports) != 2 {
		t.Fatalf("two ports of one container: %v %q %v", ports, served, err)
	}
	if ports[0].appPort != 8080 || ports[0].sp.Name != "http" || ports[1].appPort != 9090 || ports[1].sp.Name != "grpc" || ports[1].spec.Local != 9091 {
		t.Fatalf("plan %+v", ports)
	}
	for _, c := range []struct {
		name  string
		specs []resolve.PortSpec
		err   string
	}{
		{"one Service port by name and by number", []resolve.PortSpec{spec(8080, "http"), spec(8081, "80")}, "--port 8080:http and --port 8081:80 both take Service port http (80) of web"},
		{"two Service ports, one container port", []resolve.PortSpec{spec(8080, "http"), spec(8081, "alt")}, "Service ports http (80) and alt (8000) of web both target container port 8080"},
		{"ports of two containers", []resolve.PortSpec{spec(8080, "http"), spec(9100, "metrics")}, `Service port http (80) is served by container "app", metrics (9100) by "sidecar"`},
		{"a port the Service lacks", []resolve.PortSpec{spec(8080, "http"), spec(8081, "nope")}, `has no port "nope"`},
	} {
		if _, _, err := planPorts(w, svc, c.specs, ""); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s: err %v, want %q", c.name, err, c.err)
		}
	}
}

func TestCheckAgentNames(t *testing.T) {
	two := []resolve.PortSpec{{Local: 1, Service: "a"}, {Local: 2, Service: "b"}}
	if err := checkAgentNames(strings.Repeat("a", 253), two[:1]); err != nil {
		t.Fatalf("one port: the agents' name is the name itself: %v", err)
	}
	if err := checkAgentNames(strings.Repeat("a", 247), two); err != nil {
		t.Fatalf("247 + len(.65535) = 253: %v", err)
	}
	if err := checkAgentNames(strings.Repeat("a", 248), two); err == nil || !strings.Contains(err.Error(), "at most 247") {
		t.Fatalf("248 characters, 2 ports: %v", err)
	}
}
