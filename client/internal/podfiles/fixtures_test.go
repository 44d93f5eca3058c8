package podfiles

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/detour-dev/detour/internal/annotations"
)

const ns = "shop"

func meta(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name, Namespace: ns} }

// testPod is a running, injected pod of namespace shop: container "app"
// (memory limit 256Mi, CPU request 250m, no CPU limit) and the agent.
func testPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: ns, UID: "uid-1",
			Labels:      map[string]string{"app": "web", "tier": "front"},
			Annotations: map[string]string{"owner": `team "a"`}},
		Spec: corev1.PodSpec{
			ServiceAccountName: "web",
			NodeName:           "n1",
			Containers: []corev1.Container{
				{Name: "app", Resources: corev1.ResourceRequirements{
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
				}},
				{Name: annotations.AgentContainerName},
			},
		},
		Status: corev1.PodStatus{
			PodIP: "10.0.0.7", PodIPs: []corev1.PodIP{{IP: "10.0.0.7"}, {IP: "fd00::7"}},
			HostIP: "192.168.1.2", HostIPs: []corev1.HostIP{{IP: "192.168.1.2"}},
		},
	}
}

// objects are what namespace shop (and node n1) hold.
func objects() []runtime.Object {
	return []runtime.Object{
		&corev1.ConfigMap{ObjectMeta: meta("app-config"),
			Data:       map[string]string{"app.yaml": "port: 8080\n", "log.level": "debug"},
			BinaryData: map[string][]byte{"logo.png": {0x89, 'P', 'N', 'G'}}},
		&corev1.ConfigMap{ObjectMeta: meta("env-config"), Data: map[string]string{"LOG_LEVEL": "debug", "PORT": "8080"}},
		&corev1.ConfigMap{ObjectMeta: meta("kube-root-ca.crt"), Data: map[string]string{"ca.crt": "CA PEM"}},
		&corev1.Secret{ObjectMeta: meta("tls"), Data: map[string][]byte{"tls.crt": []byte("CRT"), "tls.key": []byte("KEY")}},
		&corev1.Secret{ObjectMeta: meta("db"), Data: map[string][]byte{"password": []byte("hunter2"), "user": []byte("app")}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi")}}},
	}
}

// forbid makes the fake API refuse verb on resource with a 403, as RBAC
// does.
func forbid(cs *fake.Clientset, verb, res string) {
	cs.PrependReactor(verb, res, func(a k8stesting.Action) (bool, runtime.Object, error) {
		name := ""
		if g, ok := a.(k8stesting.GetAction); ok {
			name = g.GetName()
		}
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: res}, name,
			fmt.Errorf("User %q cannot %s resource %q in the namespace %q", "alice", verb, res, a.GetNamespace()))
	})
}

// forbidTokens refuses create on serviceaccounts/token.
func forbidTokens(cs *fake.Clientset) {
	cs.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "token" {
			return false, nil, nil
		}
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "serviceaccounts"}, "web", errors.New("RBAC"))
	})
}

// tokens answers TokenRequests as the apiserver would, with a token that
// spells out what was asked, and records the requests.
type tokens struct {
	mu   sync.Mutex
	reqs []tokenCall
}

type tokenCall struct {
	namespace, serviceAccount string
	spec                      authenticationv1.TokenRequestSpec
}

func (t *tokens) install(cs *fake.Clientset) {
	cs.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
		c, ok := a.(k8stesting.CreateAction)
		if !ok || a.GetSubresource() != "token" {
			return false, nil, nil
		}
		tr := c.GetObject().(*authenticationv1.TokenRequest).DeepCopy()
		name := c.(k8stesting.CreateActionImpl).Name
		t.mu.Lock()
		t.reqs = append(t.reqs, tokenCall{a.GetNamespace(), name, tr.Spec})
		t.mu.Unlock()
		exp := "default"
		if tr.Spec.ExpirationSeconds != nil {
			exp = fmt.Sprint(*tr.Spec.ExpirationSeconds)
		}
		tr.Status.Token = fmt.Sprintf("token:%s/%s:aud=%s:exp=%s", a.GetNamespace(), name, strings.Join(tr.Spec.Audiences, ","), exp)
		return true, tr, nil
	})
}

func ptr[T any](v T) *T { return &v }

func fileLines(files []File) []string {
	var out []string
	for _, f := range files {
		out = append(out, fileLine(f))
	}
	return out
}

func fileLine(f File) string {
	return fmt.Sprintf("%s %04o mount=%s %q", f.Path, uint32(f.Mode), f.Mount, f.Data)
}

func whys(notes []Note) []string {
	var out []string
	for _, n := range notes {
		out = append(out, n.Why)
	}
	return out
}

func configMapVolume(name, cm string, items ...corev1.KeyToPath) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: cm}, Items: items}}}
}

func secretVolume(name, secret string, items ...corev1.KeyToPath) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secret, Items: items}}}
}

// kubeAPIAccess is the projected volume the service-account admission
// plugin adds to every pod.
func kubeAPIAccess() corev1.Volume {
	return corev1.Volume{Name: "kube-api-access-x", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		DefaultMode: ptr(int32(0o644)),
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{ExpirationSeconds: ptr(int64(3607)), Path: "token"}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
				Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{
				{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}}}},
		},
	}}}
}

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func mountAt(volume, at string) corev1.VolumeMount {
	return corev1.VolumeMount{Name: volume, MountPath: at, ReadOnly: true}
}
