package resolve

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestNames(t *testing.T) {
	cases := []struct {
		name, workload, ns string
		nsGiven            bool
		wantIntercept      string
		wantWorkload       string
	}{
		{"hello", "", "default", false, "hello", "hello"},
		{"hello", "", "myns", true, "hello-myns", "hello"},
		{"mine", "hello", "myns", true, "mine", "hello"},
		{"mine", "hello", "default", false, "mine", "hello"},
	}
	for _, c := range cases {
		ic, wl := Names(c.name, c.workload, c.ns, c.nsGiven)
		if ic != c.wantIntercept || wl != c.wantWorkload {
			t.Errorf("Names(%q, %q, %q, %v) = %q, %q; want %q, %q", c.name, c.workload, c.ns, c.nsGiven, ic, wl, c.wantIntercept, c.wantWorkload)
		}
	}
}

func TestParsePort(t *testing.T) {
	good := map[string]PortSpec{"8080": {8080, ""}, "8080:http": {8080, "http"}, "3000:80": {3000, "80"}}
	for in, want := range good {
		got, err := ParsePort(in)
		if err != nil || got != want {
			t.Errorf("ParsePort(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "http", "70000", "8080:", ":http"} {
		if _, err := ParsePort(bad); !errors.Is(err, ErrBadPort) {
			t.Errorf("ParsePort(%q) err = %v, want ErrBadPort", bad, err)
		}
	}
}

func template(labels map[string]string, containers ...corev1.Container) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: containers}}
}

func deploy(name string, labels map[string]string) appsv1.Deployment {
	return appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"},
		Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: template(labels)}}
}

func TestFindWorkload(t *testing.T) {
	owned := appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "web-5d8f", Namespace: "ns",
		OwnerReferences: []metav1.OwnerReference{{Kind: "Deployment", Name: "web", Controller: ptr(true)}}}}
	c := Candidates{
		Deployments:  []appsv1.Deployment{deploy("web", map[string]string{"app": "web"}), deploy("db", nil)},
		ReplicaSets:  []appsv1.ReplicaSet{owned, {ObjectMeta: metav1.ObjectMeta{Name: "bare", Namespace: "ns"}}},
		StatefulSets: []appsv1.StatefulSet{{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "ns"}}, {ObjectMeta: metav1.ObjectMeta{Name: "kv", Namespace: "ns"}}},
	}
	cases := []struct {
		in       string
		wantKind string
		wantErr  error
		inMsg    string
	}{
		{"web", KindDeployment, nil, ""},
		{"bare", KindReplicaSet, nil, ""},
		{"kv", KindStatefulSet, nil, ""},
		{"sts/db", KindStatefulSet, nil, ""},
		{"deployment/db", KindDeployment, nil, ""},
		{"db", "", ErrWorkloadAmbiguous, "deployment/db and statefulset/db"},
		{"web-5d8f", "", ErrWorkloadNotFound, "deployment/web"},
		{"nope", "", ErrWorkloadNotFound, `no Deployment, ReplicaSet or StatefulSet named "nope" in namespace "ns"`},
		{"job/x", "", ErrWorkloadNotFound, "unknown kind"},
	}
	for _, tc := range cases {
		w, err := FindWorkload(tc.in, "ns", c)
		if tc.wantErr != nil {
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.inMsg) {
				t.Errorf("%s: err = %v; want %v containing %q", tc.in, err, tc.wantErr, tc.inMsg)
			}
			continue
		}
		if err != nil || w.Kind != tc.wantKind {
			t.Errorf("%s: got %s, %v; want kind %s", tc.in, w.Kind, err, tc.wantKind)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func svc(name string, selector map[string]string, ports ...corev1.ServicePort) corev1.Service {
	return corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}, Spec: corev1.ServiceSpec{Selector: selector, Ports: ports}}
}

func TestFindService(t *testing.T) {
	w := Workload{Kind: KindDeployment, Name: "web", Namespace: "ns", Template: template(map[string]string{"app": "web", "track": "stable"})}
	all := []corev1.Service{
		svc("web-stable", map[string]string{"app": "web", "track": "stable"}),
		svc("web-canary", map[string]string{"app": "web", "track": "canary"}),
		svc("web", map[string]string{"app": "web"}),
		svc("external", nil),
		svc("other", map[string]string{"app": "other"}),
	}
	if _, err := FindService(w, all, ""); !errors.Is(err, ErrServiceAmbiguous) || !strings.Contains(err.Error(), "web, web-stable") {
		t.Fatalf("ambiguous: %v", err)
	}
	if s, err := FindService(w, all, "web-stable"); err != nil || s.Name != "web-stable" {
		t.Fatalf("--service web-stable: %v", err)
	}
	if _, err := FindService(w, all, "web-canary"); !errors.Is(err, ErrServiceNotFound) || !strings.Contains(err.Error(), "does not select") {
		t.Fatalf("--service of another track: %v", err)
	}
	if _, err := FindService(w, all, "nope"); !errors.Is(err, ErrServiceNotFound) {
		t.Fatalf("--service nope: %v", err)
	}
	if s, err := FindService(w, all[2:], ""); err != nil || s.Name != "web" {
		t.Fatalf("single match: %v %v", s.Name, err)
	}
	if _, err := FindService(w, all[3:], ""); !errors.Is(err, ErrNoService) {
		t.Fatalf("none: %v", err)
	}
}

// TestFindServiceIgnoresExternalName: an ExternalName Service is a DNS
// alias whose selector Kubernetes ignores; the webhook never counted it,
// and now the CLI does not either (one rule, podport.Selects).
func TestFindServiceIgnoresExternalName(t *testing.T) {
	w := Workload{Kind: KindDeployment, Name: "web", Namespace: "ns", Template: template(map[string]string{"app": "web"})}
	alias := svc("web-alias", map[string]string{"app": "web"})
	alias.Spec.Type = corev1.ServiceTypeExternalName
	alias.Spec.ExternalName = "web.example.test"
	s, err := FindService(w, []corev1.Service{alias, svc("web", map[string]string{"app": "web"})}, "")
	if err != nil || s.Name != "web" {
		t.Fatalf("got %q, %v; want the one Service that reaches the pods", s.Name, err)
	}
}

func TestFindServicePortAndContainerPort(t *testing.T) {
	s := svc("web", nil,
		corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("web")},
		corev1.ServicePort{Name: "admin", Port: 9000, TargetPort: intstr.FromInt32(9001)})
	w := Workload{Kind: KindDeployment, Name: "web", Template: template(nil,
		corev1.Container{Name: "app", Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: 8080}}},
		corev1.Container{Name: "admin", Ports: []corev1.ContainerPort{{ContainerPort: 9001}}})}

	if _, err := FindServicePort(s, ""); !errors.Is(err, ErrPortAmbiguous) || !strings.Contains(err.Error(), "http (80), admin (9000)") {
		t.Fatalf("no port given: %v", err)
	}
	if _, err := FindServicePort(s, "grpc"); !errors.Is(err, ErrPortNotFound) {
		t.Fatalf("unknown port: %v", err)
	}
	for want, port := range map[string]int32{"http": 80, "80": 80, "9000": 9000, "admin": 9000} {
		p, err := FindServicePort(s, want)
		if err != nil || p.Port != port {
			t.Fatalf("%s: %v %v", want, p.Port, err)
		}
	}
	cp, c, err := ContainerPort(w, s.Spec.Ports[0], "")
	if err != nil || cp != 8080 || c != "app" {
		t.Fatalf("named targetPort: %d %s %v", cp, c, err)
	}
	cp, c, err = ContainerPort(w, s.Spec.Ports[1], "")
	if err != nil || cp != 9001 || c != "admin" {
		t.Fatalf("numbered targetPort: %d %s %v", cp, c, err)
	}
	// Headless service port without targetPort: the port itself.
	cp, _, err = ContainerPort(w, corev1.ServicePort{Port: 8080}, "")
	if err != nil || cp != 8080 {
		t.Fatalf("no targetPort: %d %v", cp, err)
	}
	if _, _, err := ContainerPort(w, corev1.ServicePort{Name: "x", Port: 1, TargetPort: intstr.FromString("missing")}, ""); !errors.Is(err, ErrContainerPortFound) {
		t.Fatalf("missing named port: %v", err)
	}
}

// TestContainerPortWithSeveralContainers: a port two containers declare
// is ambiguous without --container, and the error lists them; with it,
// the one named serves; a container that does not exist, or does not
// declare the named port, is an error that says so.
func TestContainerPortWithSeveralContainers(t *testing.T) {
	w := Workload{Kind: KindDeployment, Name: "web", Template: template(nil,
		corev1.Container{Name: "blue", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}},
		corev1.Container{Name: "green", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8081}, {Name: "metrics", ContainerPort: 9090}}})}
	byName := corev1.ServicePort{Name: "web", Port: 80, TargetPort: intstr.FromString("http")}
	cases := []struct {
		sp        corev1.ServicePort
		container string
		port      uint16
		got       string
		err       error
		says      string
	}{
		{byName, "", 0, "", ErrContainerAmbiguous, "containers blue, green of deployment/web all declare: choose one with --container NAME"},
		{byName, "green", 8081, "green", nil, ""},
		{byName, "blue", 8080, "blue", nil, ""},
		{byName, "red", 0, "", ErrNoSuchContainer, `--container "red": deployment/web has no such container (it has blue, green)`},
		{corev1.ServicePort{Port: 9090, TargetPort: intstr.FromString("metrics")}, "blue", 0, "", ErrContainerPortFound, `container "blue" of deployment/web does not declare`},
		{corev1.ServicePort{Port: 9090, TargetPort: intstr.FromString("metrics")}, "", 9090, "green", nil, ""},
		{corev1.ServicePort{Port: 7000, TargetPort: intstr.FromInt32(7000)}, "green", 7000, "green", nil, ""},
		{corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}, "", 0, "", ErrNotTCP, `service port "dns" (53) is UDP: detour intercepts TCP`},
	}
	for _, c := range cases {
		port, got, err := ContainerPort(w, c.sp, c.container)
		if port != c.port || got != c.got || !errors.Is(err, c.err) || (c.says != "" && !strings.Contains(fmt.Sprint(err), c.says)) {
			t.Errorf("%v --container %q: %d %q %v; want %d %q %v saying %q", c.sp.TargetPort.String(), c.container, port, got, err, c.port, c.got, c.err, c.says)
		}
	}
}

// TestFindWorkloadRollout: Argo Rollouts' Rollout is a kind like the
// others (rollout/NAME, ro/NAME); its ReplicaSets are left to it; a
// "not found" names it only where the cluster serves it.
func TestFindWorkloadRollout(t *testing.T) {
	tmpl := template(map[string]string{"app": "web"}, corev1.Container{Name: "app"})
	ro := Workload{Kind: KindRollout, Name: "web", Namespace: "ns", Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}, Template: tmpl}
	rs := Workload{Kind: KindReplicaSet, Name: "web-6f9c", Namespace: "ns", Template: tmpl, Controlled: true}
	c := Candidates{Workloads: []Workload{rs, ro}, Kinds: []string{KindDeployment, KindStatefulSet, KindReplicaSet, KindRollout}}
	for _, in := range []string{"web", "rollout/web", "ro/web", "Rollouts/web"} {
		if w, err := FindWorkload(in, "ns", c); err != nil || w.Kind != KindRollout || w.Ref() != "rollout/web" {
			t.Errorf("%s: %+v %v", in, w, err)
		}
	}
	_, err := FindWorkload("web-6f9c", "ns", c)
	if !errors.Is(err, ErrWorkloadNotFound) || !strings.Contains(err.Error(), `no Deployment, ReplicaSet or StatefulSet named "web-6f9c" in namespace "ns", nor a Rollout (it has: rollout/web)`) {
		t.Errorf("a Rollout's ReplicaSet: %v", err)
	}
	_, err = FindWorkload("nope", "ns", Candidates{Kinds: c.Kinds})
	if !strings.Contains(err.Error(), "it has no Deployments, ReplicaSets, Rollouts or StatefulSets") {
		t.Errorf("empty namespace: %v", err)
	}
	_, err = FindWorkload("nope", "ns", Candidates{Kinds: []string{KindDeployment, KindStatefulSet, KindReplicaSet}})
	if strings.Contains(err.Error(), "Rollout") {
		t.Errorf("a cluster without Argo Rollouts: %v", err)
	}
	if _, err := FindWorkload("job/x", "ns", c); err == nil || !strings.Contains(err.Error(), "rollout/") {
		t.Errorf("unknown kind: %v", err)
	}
}
