package resolve

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/detour-dev/detour/client/internal/workload"
	"github.com/detour-dev/detour/internal/podport"
)

// Sentinels for the ways resolution fails; the messages say more.
var (
	ErrWorkloadNotFound   = errors.New("workload not found")
	ErrWorkloadAmbiguous  = errors.New("workload name is ambiguous")
	ErrNoService          = errors.New("no service selects the workload")
	ErrServiceAmbiguous   = errors.New("several services select the workload")
	ErrServiceNotFound    = errors.New("service not found")
	ErrPortNotFound       = errors.New("service port not found")
	ErrPortAmbiguous      = errors.New("service has several ports")
	ErrBadPort            = errors.New("bad --port")
	ErrContainerPortFound = errors.New("no container serves the service port")
	ErrNoSuchContainer    = errors.New("no such container in the pod template")
	ErrContainerAmbiguous = errors.New("several containers serve the service port")
	ErrNotTCP             = errors.New("the service port is not TCP")
)

// Kinds of workload detour intercepts (the table: client/internal/workload).
const (
	KindDeployment  = workload.KindDeployment
	KindReplicaSet  = workload.KindReplicaSet
	KindStatefulSet = workload.KindStatefulSet
	KindRollout     = workload.KindRollout
)

// Workload is the part of a workload object detour needs.
type Workload = workload.Workload

// Names decides the intercept's name and the workload's name. With -n NS and
// no --workload, NAME is the workload and the intercept is NAME-NS; with
// --workload W, NAME is the intercept and W the workload; otherwise both are
// NAME.
func Names(name, workloadFlag, namespace string, namespaceGiven bool) (intercept, workload string) {
	switch {
	case workloadFlag != "":
		return name, workloadFlag
	case namespaceGiven:
		return name + "-" + namespace, name
	default:
		return name, name
	}
}

// PortSpec is a parsed --port LOCAL[:SVCPORT].
type PortSpec struct {
	Local   uint16
	Service string // a service port name or number; empty: the only port
}

// ParsePort parses --port LOCAL[:SVCPORT].
func ParsePort(s string) (PortSpec, error) {
	local, svc, _ := strings.Cut(s, ":")
	n, err := strconv.ParseUint(local, 10, 16)
	if err != nil || n == 0 {
		return PortSpec{}, fmt.Errorf("--port %q: LOCAL must be a port number 1..65535, as in --port 8080 or --port 8080:http: %w", s, ErrBadPort)
	}
	if strings.Contains(s, ":") && svc == "" {
		return PortSpec{}, fmt.Errorf("--port %q: nothing after ':'; give the service port's name or number, or leave out the ':': %w", s, ErrBadPort)
	}
	return PortSpec{Local: uint16(n), Service: svc}, nil
}

// Candidates are the workloads of a namespace.
type Candidates struct {
	// Workloads are the workloads as listed through the kinds table,
	// controlled ones included.
	Workloads []Workload
	// Kinds are the kinds that were listed (a cluster may not serve the
	// custom ones), named when nothing matches; none: the built-in kinds.
	Kinds []string
	// Deployments, ReplicaSets and StatefulSets are typed objects, for a
	// caller that holds them so; they count as Workloads of their kind.
	Deployments  []appsv1.Deployment
	ReplicaSets  []appsv1.ReplicaSet
	StatefulSets []appsv1.StatefulSet
}

// All are the candidates that are workloads of their own (not the
// ReplicaSets of a Deployment or a Rollout), typed ones first.
func (c Candidates) All() []Workload {
	var objs []runtime.Object
	for i := range c.Deployments {
		objs = append(objs, &c.Deployments[i])
	}
	for i := range c.StatefulSets {
		objs = append(objs, &c.StatefulSets[i])
	}
	for i := range c.ReplicaSets {
		objs = append(objs, &c.ReplicaSets[i])
	}
	var out []Workload
	for _, o := range objs {
		if w, ok := workload.FromObject(o); ok {
			out = append(out, w)
		}
	}
	out = append(out, c.Workloads...)
	return slices.DeleteFunc(out, func(w Workload) bool {
		k, err := workload.ByName(w.Kind)
		return err != nil || !k.Standalone(w)
	})
}

// kindNames is "Deployment, ReplicaSet or StatefulSet": the kinds listed,
// sorted, each followed by suffix ("s": "Deployments, ...").
func (c Candidates) kindNames(suffix string) string {
	ks := c.kinds()
	names := make([]string, len(ks))
	for i, k := range ks {
		names[i] = k + suffix
	}
	slices.Sort(names)
	return orList(names)
}

// kinds are the kinds listed: none said, the built-in ones.
func (c Candidates) kinds() []string {
	if len(c.Kinds) == 0 {
		return workload.Builtin()
	}
	return c.Kinds
}

// orList is "a", "a or b", "a, b or c".
func orList(s []string) string {
	if len(s) <= 1 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// FindWorkload finds name among the candidates. name may be "kind/name"
// (deployment/hello, rs/hello, sts/hello, rollout/hello) to pick a kind.
// ReplicaSets owned by a Deployment or a Rollout are skipped: their owner is
// the workload.
func FindWorkload(name, namespace string, c Candidates) (Workload, error) {
	kindFilter := ""
	if k, n, ok := strings.Cut(name, "/"); ok {
		kind, ok := workload.ByAlias(k)
		if !ok {
			var aliases []string
			for _, kk := range workload.Kinds {
				aliases = append(aliases, kk.Aliases[0]+"/")
			}
			return Workload{}, fmt.Errorf("%q: unknown kind %q; use %s: %w", name, k, orList(aliases), ErrWorkloadNotFound)
		}
		kindFilter, name = kind.Name, n
	}
	all := c.All()
	var found []Workload
	for _, w := range all {
		if w.Name == name && (kindFilter == "" || w.Kind == kindFilter) {
			found = append(found, w)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		names := make([]string, len(all))
		for i, w := range all {
			names[i] = w.Ref()
		}
		hint := "it has no " + c.kindNames("s")
		// The built-in kinds first, then those of custom resources the
		// cluster serves: "no Deployment, ReplicaSet or StatefulSet named
		// "x" in namespace "ns", nor a Rollout".
		var builtin, custom []string
		for _, k := range c.kinds() {
			if kk, err := workload.ByName(k); err == nil && kk.Custom {
				custom = append(custom, "a "+k)
			} else {
				builtin = append(builtin, k)
			}
		}
		slices.Sort(builtin)
		nor := ""
		if len(custom) > 0 {
			nor = ", nor " + orList(custom)
		}
		if len(names) > 0 {
			slices.Sort(names)
			hint = "it has: " + strings.Join(names, ", ")
		}
		return Workload{}, fmt.Errorf("no %s named %q in namespace %q%s (%s): %w", orList(builtin), name, namespace, nor, hint, ErrWorkloadNotFound)
	default:
		refs := make([]string, len(found))
		for i, w := range found {
			refs[i] = w.Ref()
		}
		return Workload{}, fmt.Errorf("%q names %s in namespace %q: say which, e.g. --workload %s: %w", name, strings.Join(refs, " and "), namespace, refs[0], ErrWorkloadAmbiguous)
	}
}

// FindService picks the Service whose selector matches the workload's pods.
// With pick set, it must be one of them. Services that select no pod by
// label are ignored (podport.Selects: no selector, or ExternalName).
func FindService(w Workload, services []corev1.Service, pick string) (corev1.Service, error) {
	podLabels := labels.Set(w.Template.Labels)
	var matching []corev1.Service
	for _, s := range services {
		if podport.Selects(s, podLabels) {
			matching = append(matching, s)
		}
	}
	names := make([]string, len(matching))
	for i, s := range matching {
		names[i] = s.Name
	}
	slices.Sort(names)
	if pick != "" {
		for _, s := range matching {
			if s.Name == pick {
				return s, nil
			}
		}
		for _, s := range services {
			if s.Name == pick {
				return corev1.Service{}, fmt.Errorf("service %q does not select the pods of %s (services that do: %s): %w", pick, w.Ref(), listOrNone(names), ErrServiceNotFound)
			}
		}
		return corev1.Service{}, fmt.Errorf("no service %q in namespace %q (services that select %s: %s): %w", pick, w.Namespace, w.Ref(), listOrNone(names), ErrServiceNotFound)
	}
	switch len(matching) {
	case 0:
		return corev1.Service{}, fmt.Errorf("no service in namespace %q selects the pods of %s (labels %s): create one, or check its selector: %w", w.Namespace, w.Ref(), podLabels, ErrNoService)
	case 1:
		return matching[0], nil
	}
	return corev1.Service{}, fmt.Errorf("%d services select the pods of %s: %s; pick one with --service: %w", len(matching), w.Ref(), strings.Join(names, ", "), ErrServiceAmbiguous)
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// FindServicePort picks the service port named or numbered by want, or the
// only port when want is empty.
func FindServicePort(svc corev1.Service, want string) (corev1.ServicePort, error) {
	describe := func() string {
		s := make([]string, len(svc.Spec.Ports))
		for i, p := range svc.Spec.Ports {
			if p.Name != "" {
				s[i] = fmt.Sprintf("%s (%d)", p.Name, p.Port)
			} else {
				s[i] = fmt.Sprint(p.Port)
			}
		}
		return strings.Join(s, ", ")
	}
	if want == "" {
		switch len(svc.Spec.Ports) {
		case 1:
			return svc.Spec.Ports[0], nil
		case 0:
			return corev1.ServicePort{}, fmt.Errorf("service %q has no ports: %w", svc.Name, ErrPortNotFound)
		}
		return corev1.ServicePort{}, fmt.Errorf("service %q has ports %s: say which with --port LOCAL:NAME-OR-NUMBER: %w", svc.Name, describe(), ErrPortAmbiguous)
	}
	for _, p := range svc.Spec.Ports {
		if p.Name == want {
			return p, nil
		}
	}
	if n, err := strconv.ParseInt(want, 10, 32); err == nil {
		for _, p := range svc.Spec.Ports {
			if int64(p.Port) == n {
				return p, nil
			}
		}
	}
	return corev1.ServicePort{}, fmt.Errorf("service %q has no port %q (it has %s): %w", svc.Name, want, describe(), ErrPortNotFound)
}

// ContainerPort resolves a service port's targetPort in the pod template: a
// name is looked up among the containers' ports, a number is taken as is
// (and attributed to the container that declares it, if any). For headless
// services without a targetPort, the port itself is the container port.
//
// want (--container) restricts the lookup to one container. Without it,
// a port that several containers declare is ErrContainerAmbiguous, naming
// them; a number no container declares goes to the first container.
func ContainerPort(w Workload, sp corev1.ServicePort, want string) (port uint16, container string, err error) {
	cs := w.Template.Spec.Containers
	only := -1
	if want != "" {
		if only = slices.IndexFunc(cs, func(c corev1.Container) bool { return c.Name == want }); only < 0 {
			return 0, "", fmt.Errorf("--container %q: %s has no such container (it has %s): %w", want, w.Ref(), containerNames(cs), ErrNoSuchContainer)
		}
	}
	if !podport.TCP(sp) {
		return 0, "", fmt.Errorf("service port %s is %s: detour intercepts TCP (HTTP, gRPC, any TCP protocol): %w", portName(sp), sp.Protocol, ErrNotTCP)
	}
	tp := podport.Target(sp)
	named := tp.Type == intstr.String && tp.StrVal != ""
	var found []string
	n := tp.IntValue()
	for _, m := range podport.Find(cs, tp, only) {
		found = append(found, cs[m.Container].Name)
		n = int(m.Port.ContainerPort)
	}
	what := fmt.Sprintf("port %d", n)
	if named {
		what = fmt.Sprintf("the port named %q", tp.StrVal)
	}
	switch {
	case len(found) == 1:
		return uint16(n), found[0], nil
	case len(found) > 1:
		return 0, "", fmt.Errorf("service port %s targets %s, which containers %s of %s all declare: choose one with --container NAME: %w",
			portName(sp), what, strings.Join(found, ", "), w.Ref(), ErrContainerAmbiguous)
	case named && want != "":
		return 0, "", fmt.Errorf("service port %s targets %s, which container %q of %s does not declare: %w", portName(sp), what, want, w.Ref(), ErrContainerPortFound)
	case named:
		return 0, "", fmt.Errorf("service port %s targets %s, which no container of %s declares: %w", portName(sp), what, w.Ref(), ErrContainerPortFound)
	case want != "":
		return uint16(n), want, nil // an undeclared number: the container asked for
	case len(cs) > 0:
		return uint16(n), cs[0].Name, nil
	}
	return uint16(n), "", nil
}

func containerNames(cs []corev1.Container) string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.Name
	}
	return listOrNone(names)
}

func portName(sp corev1.ServicePort) string {
	if sp.Name != "" {
		return fmt.Sprintf("%q (%d)", sp.Name, sp.Port)
	}
	return fmt.Sprint(sp.Port)
}
