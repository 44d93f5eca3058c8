package podport

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestFind is the rule both the webhook and the CLI use. The two had
// differed: the webhook matched TCP container ports only, the CLI any
// protocol. TCP won (detour relays TCP; a UDP port of the same number or
// name is another socket): "dns by number" below found the UDP
// container's port in the CLI before.
func TestFind(t *testing.T) {
	cs := []corev1.Container{
		{Name: "udp-dns", Ports: []corev1.ContainerPort{{Name: "dns-udp", ContainerPort: 53, Protocol: corev1.ProtocolUDP}}},
		{Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolTCP}}},
		{Name: "side", Ports: []corev1.ContainerPort{{Name: "admin", ContainerPort: 8080}}},
	}
	type m struct {
		c    int
		port int32
	}
	for _, c := range []struct {
		name string
		tp   intstr.IntOrString
		only int
		want []m
	}{
		{"by name", intstr.FromString("http"), -1, []m{{1, 8080}}},
		{"dns by number: TCP only", intstr.FromInt32(53), -1, []m{{1, 53}}},
		{"a UDP name", intstr.FromString("dns-udp"), -1, nil},
		{"a number two containers declare", intstr.FromInt32(8080), -1, []m{{1, 8080}, {2, 8080}}},
		{"only one container", intstr.FromInt32(8080), 2, []m{{2, 8080}}},
		{"a name not in that container", intstr.FromString("http"), 2, nil},
		{"undeclared", intstr.FromInt32(9999), -1, nil},
	} {
		got := Find(cs, c.tp, c.only)
		if len(got) != len(c.want) {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
			continue
		}
		for i := range got {
			if got[i].Container != c.want[i].c || got[i].Port.ContainerPort != c.want[i].port {
				t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
			}
		}
	}
	if tp := Target(corev1.ServicePort{Port: 80}); tp.IntVal != 80 {
		t.Errorf("no targetPort: %v, want the port itself", tp)
	}
	if tp := Target(corev1.ServicePort{Port: 80, TargetPort: intstr.FromString("")}); tp.Type != intstr.Int || tp.IntVal != 80 {
		t.Errorf("an empty name: %v, want the port itself (it matched every unnamed port)", tp)
	}
	if !TCP(corev1.ServicePort{}) || TCP(corev1.ServicePort{Protocol: corev1.ProtocolUDP}) {
		t.Error("TCP: empty is TCP, UDP is not")
	}
}
