package podport

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Match is one container port a Service port reaches.
type Match struct {
	Container int // index in the pod's containers
	Port      corev1.ContainerPort
}

// Target is a Service port's targetPort, with the Kubernetes default:
// none (0) means the Service port's own number.
func Target(sp corev1.ServicePort) intstr.IntOrString {
	tp := sp.TargetPort
	if (tp.Type == intstr.Int && tp.IntVal == 0) || (tp.Type == intstr.String && tp.StrVal == "") {
		return intstr.FromInt32(sp.Port)
	}
	return tp
}

// Find returns the containers' TCP ports that tp names or numbers, in
// container order (one per container at most); only ≥ 0 looks in
// containers[only] alone. UDP and SCTP ports never match: detour relays
// TCP, and a UDP port of the same number is another socket.
func Find(containers []corev1.Container, tp intstr.IntOrString, only int) []Match {
	var out []Match
	for ci, c := range containers {
		if only >= 0 && ci != only {
			continue
		}
		for _, cp := range c.Ports {
			if !isTCP(cp.Protocol) {
				continue
			}
			if (tp.Type == intstr.String && cp.Name == tp.StrVal) || (tp.Type == intstr.Int && cp.ContainerPort == tp.IntVal) {
				out = append(out, Match{Container: ci, Port: cp})
				break
			}
		}
	}
	return out
}

// TCP says whether a Service port carries TCP (the default protocol).
func TCP(sp corev1.ServicePort) bool { return isTCP(sp.Protocol) }

func isTCP(p corev1.Protocol) bool { return p == "" || p == corev1.ProtocolTCP }
