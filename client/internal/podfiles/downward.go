package podfiles

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// downward is one downward API value: a fieldRef of the pod or a
// resourceFieldRef of a container. ok is false when a note says why not.
func (r *reader) downward(ctx context.Context, f *corev1.ObjectFieldSelector, rf *corev1.ResourceFieldSelector, u use) (v string, ok bool, err error) {
	switch {
	case f != nil:
		v, err := fieldValue(r.pod, f.FieldPath)
		if err != nil {
			r.note(u.path, u.kind, fmt.Sprintf("%s %s: %v", u.subject, u.lost, err))
			return "", false, nil
		}
		return v, true, nil
	case rf != nil:
		return r.resourceField(ctx, rf, u)
	}
	r.note(u.path, u.kind, fmt.Sprintf("%s %s: it names neither a fieldRef nor a resourceFieldRef", u.subject, u.lost))
	return "", false, nil
}

// fieldValue is a fieldRef's value, as the kubelet gives it to a volume
// file or a variable.
func fieldValue(pod *corev1.Pod, fieldPath string) (string, error) {
	if p, key, ok := subscript(fieldPath); ok {
		switch p {
		case "metadata.labels":
			return pod.Labels[key], nil
		case "metadata.annotations":
			return pod.Annotations[key], nil
		}
		return "", fmt.Errorf("fieldPath %q takes no subscript", fieldPath)
	}
	switch fieldPath {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP":
		return pod.Status.HostIP, nil
	case "status.hostIPs":
		return joinIPs(pod.Status.HostIPs, func(ip corev1.HostIP) string { return ip.IP }), nil
	case "status.podIP":
		return pod.Status.PodIP, nil
	case "status.podIPs":
		return joinIPs(pod.Status.PodIPs, func(ip corev1.PodIP) string { return ip.IP }), nil
	}
	return "", fmt.Errorf("fieldPath %q is not one the downward API offers", fieldPath)
}

func joinIPs[T any](ips []T, ip func(T) string) string {
	s := make([]string, len(ips))
	for i, v := range ips {
		s[i] = ip(v)
	}
	return strings.Join(s, ",")
}

// subscript splits metadata.labels['key'].
func subscript(fieldPath string) (p, key string, ok bool) {
	s, ok := strings.CutSuffix(fieldPath, "']")
	if !ok {
		return "", "", false
	}
	p, key, ok = strings.Cut(s, "['")
	return p, key, ok && p != ""
}

// formatMap is the kubelet's rendering of labels and annotations: sorted
// key="quoted value" lines.
func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b []byte
	for i, k := range keys {
		if i > 0 {
			b = append(b, '\n')
		}
		b = append(b, k...)
		b = append(b, '=')
		b = strconv.AppendQuote(b, m[k])
	}
	return string(b)
}

// resourceField is a resourceFieldRef's value. Like the kubelet, an unset
// CPU, memory or ephemeral-storage limit is the pod-level limit, else the
// node's allocatable (read as the user: get on nodes).
func (r *reader) resourceField(ctx context.Context, fs *corev1.ResourceFieldSelector, u use) (string, bool, error) {
	c := r.container
	if fs.ContainerName != "" {
		if c = podContainer(r.pod, fs.ContainerName); c == nil {
			r.note(u.path, u.kind, fmt.Sprintf("%s %s: the pod has no container %q", u.subject, u.lost, fs.ContainerName))
			return "", false, nil
		}
	}
	c = c.DeepCopy()
	if ok, err := r.defaultLimit(ctx, c, fs.Resource, u); !ok || err != nil {
		return "", false, err
	}
	v, err := resourceValue(fs, c)
	if err != nil {
		r.note(u.path, u.kind, fmt.Sprintf("%s %s: %v", u.subject, u.lost, err))
		return "", false, nil
	}
	return v, true, nil
}

// defaultLimit fills in c's limit for res ("limits.cpu") when c sets none
// (the kubelet does so for CPU, memory and ephemeral storage). ok is false
// when a note says why it could not.
func (r *reader) defaultLimit(ctx context.Context, c *corev1.Container, res string, u use) (ok bool, err error) {
	name, isLimit := strings.CutPrefix(res, "limits.")
	rn := corev1.ResourceName(name)
	defaultable := rn == corev1.ResourceCPU || rn == corev1.ResourceMemory || rn == corev1.ResourceEphemeralStorage
	if q, set := c.Resources.Limits[rn]; !isLimit || !defaultable || (set && !q.IsZero()) {
		return true, nil
	}
	if c.Resources.Limits == nil {
		c.Resources.Limits = corev1.ResourceList{}
	}
	if pr := r.pod.Spec.Resources; pr != nil {
		if q, set := pr.Limits[rn]; set && !q.IsZero() {
			c.Resources.Limits[rn] = q.DeepCopy()
			return true, nil
		}
	}
	node := r.pod.Spec.NodeName
	if node == "" {
		r.note(u.path, u.kind, fmt.Sprintf("%s %s: container %q sets no %s, and the pod is on no node whose allocatable would stand in", u.subject, u.lost, c.Name, res))
		return false, nil
	}
	n, err := r.api.node(ctx, node)
	if err != nil {
		a := access{verb: "get", resource: "nodes", object: fmt.Sprintf("node %q, whose allocatable stands in for the unset %s", node, res)}
		return false, r.absent(err, a, u)
	}
	if q, set := n.Status.Allocatable[rn]; set {
		c.Resources.Limits[rn] = q.DeepCopy()
	}
	return true, nil
}

// resourceValue is the kubelet's value of a resourceFieldRef for c: the
// quantity divided by the divisor (1 when unset), rounded up.
func resourceValue(fs *corev1.ResourceFieldSelector, c *corev1.Container) (string, error) {
	divisor := fs.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	side, name, _ := strings.Cut(fs.Resource, ".")
	var list corev1.ResourceList
	switch side {
	case "limits":
		list = c.Resources.Limits
	case "requests":
		list = c.Resources.Requests
	default:
		return "", fmt.Errorf("resource %q is not one the downward API offers", fs.Resource)
	}
	rn := corev1.ResourceName(name)
	q := list[rn]
	switch {
	case rn == corev1.ResourceCPU:
		return ceilDiv(q.MilliValue(), divisor.MilliValue()), nil
	case rn == corev1.ResourceMemory, rn == corev1.ResourceEphemeralStorage, strings.HasPrefix(name, corev1.ResourceHugePagesPrefix):
		return ceilDiv(q.Value(), divisor.Value()), nil
	}
	return "", fmt.Errorf("resource %q is not one the downward API offers", fs.Resource)
}

// ceilDiv divides as the kubelet does, in floating point.
func ceilDiv(a, b int64) string {
	return strconv.FormatInt(int64(math.Ceil(float64(a)/float64(b))), 10)
}

func podContainer(pod *corev1.Pod, name string) *corev1.Container {
	for _, list := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
	}
	return nil
}
