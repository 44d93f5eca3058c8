package webhook

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/detour-dev/detour/internal/annotations"
)

// Reasons shouldInject gives, logged and counted.
const (
	reasonInject            = "injection requested"
	reasonNotAnnotated      = "not annotated " + annotations.Inject + "=" + annotations.InjectEnabled
	reasonExcludedNamespace = "namespace excluded"
	reasonHostNetwork       = "hostNetwork pod"
	reasonAlreadyInjected   = "already injected"
)

// shouldInject decides whether pod, created in namespace, gets the agent,
// and says why. It is pure: everything it needs is in its arguments.
func shouldInject(pod *corev1.Pod, namespace string) (bool, string) {
	switch {
	case annotations.Excluded(namespace): // the configuration's namespaceSelector excludes them too; this is the second line
		return false, reasonExcludedNamespace
	case pod.Annotations[annotations.Inject] != annotations.InjectEnabled:
		return false, reasonNotAnnotated
	case pod.Annotations[annotations.Injected] != "" || hasContainer(pod, annotations.AgentContainerName):
		return false, reasonAlreadyInjected
	case pod.Spec.HostNetwork:
		// The agent's ports and nftables rules would land in the node's
		// network namespace.
		return false, reasonHostNetwork
	}
	return true, reasonInject
}

func hasContainer(pod *corev1.Pod, name string) bool {
	for _, c := range pod.Spec.Containers {
		if c.Name == name {
			return true
		}
	}
	for _, c := range pod.Spec.InitContainers {
		if c.Name == name {
			return true
		}
	}
	return false
}
