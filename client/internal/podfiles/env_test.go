package podfiles

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/detour-dev/detour/internal/annotations"
)

func TestEnv(t *testing.T) {
	lit := func(name, value string) corev1.EnvVar { return corev1.EnvVar{Name: name, Value: value} }
	from := func(name string, src corev1.EnvVarSource) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &src}
	}
	cmKey := func(cm, key string, optional bool) corev1.EnvVarSource {
		return corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: cm}, Key: key, Optional: &optional}}
	}
	secretKey := func(s, key string, optional bool) corev1.EnvVarSource {
		return corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: s}, Key: key, Optional: &optional}}
	}
	field := func(p string) corev1.EnvVarSource {
		return corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: p}}
	}
	res := func(container, r, divisor string) corev1.EnvVarSource {
		s := corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: container, Resource: r}}
		if divisor != "" {
			s.ResourceFieldRef.Divisor = resource.MustParse(divisor)
		}
		return s
	}
	cmFrom := func(cm, prefix string) corev1.EnvFromSource {
		return corev1.EnvFromSource{Prefix: prefix, ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: cm}}}
	}
	secretFrom := func(s, prefix string, optional bool) corev1.EnvFromSource {
		return corev1.EnvFromSource{Prefix: prefix, SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: s}, Optional: &optional}}
	}
	for _, tc := range []struct {
		name    string
		envFrom []corev1.EnvFromSource
		env     []corev1.EnvVar
		react   func(*fake.Clientset)
		want    map[string]string
		notes   []string
		denied  int
	}{
		{
			name: "literals, $(VAR) expanded from what is defined so far, $$ escaped, unknown kept",
			env:  []corev1.EnvVar{lit("A", "x"), lit("B", "$(A)-y"), lit("C", "$$(A)"), lit("D", "$(LATER)"), lit("E", ""), lit("LATER", "z")},
			want: map[string]string{"A": "x", "B": "x-y", "C": "$(A)", "D": "$(LATER)", "E": "", "LATER": "z"},
		},
		{
			name:    "envFrom with and without prefix; env overrides it and expands its values",
			envFrom: []corev1.EnvFromSource{cmFrom("env-config", "CFG_"), secretFrom("db", "", false), cmFrom("env-config", "")},
			env:     []corev1.EnvVar{lit("PORT", "9090"), lit("URL", "postgres://$(user):$(password)@db:$(CFG_PORT)")},
			want: map[string]string{"CFG_LOG_LEVEL": "debug", "CFG_PORT": "8080", "LOG_LEVEL": "debug", "PORT": "9090",
				"user": "app", "password": "hunter2", "URL": "postgres://app:hunter2@db:8080"},
		},
		{
			name: "key refs; a missing optional key or object leaves the variable unset; a required one is noted",
			env: []corev1.EnvVar{
				from("LOG_LEVEL", cmKey("env-config", "LOG_LEVEL", false)),
				from("DB_PASSWORD", secretKey("db", "password", false)),
				from("OPT_KEY", secretKey("db", "nope", true)),
				from("OPT_OBJ", cmKey("absent", "x", true)),
				from("REQ_KEY", secretKey("db", "nope", false)),
				from("REQ_OBJ", cmKey("absent", "x", false)),
			},
			envFrom: []corev1.EnvFromSource{secretFrom("absent", "", true)},
			want:    map[string]string{"LOG_LEVEL": "debug", "DB_PASSWORD": "hunter2"},
			notes: []string{
				`secret "db" has no key "nope": REQ_KEY is not set`,
				`configMap "absent" was not found in namespace shop: REQ_OBJ is not set`,
			},
		},
		{
			name:    "a Secret the user may not get: its variables are left out with notes, the rest is set",
			envFrom: []corev1.EnvFromSource{secretFrom("db", "DB_", false), cmFrom("env-config", "")},
			env:     []corev1.EnvVar{from("DB_PASSWORD", secretKey("db", "password", false)), lit("HOST", "db")},
			react:   func(cs *fake.Clientset) { forbid(cs, "get", "secrets") },
			want:    map[string]string{"LOG_LEVEL": "debug", "PORT": "8080", "HOST": "db"},
			notes: []string{
				`you lack get on secrets in namespace shop: envFrom with prefix "DB_" (secret "db") sets no variables; ask for it or run without it`,
				`you lack get on secrets in namespace shop: DB_PASSWORD (secret "db") is not set; ask for it or run without it`,
			},
			denied: 2,
		},
		{
			name:  "a ConfigMap the user may not get",
			env:   []corev1.EnvVar{from("LOG_LEVEL", cmKey("env-config", "LOG_LEVEL", true))},
			react: func(cs *fake.Clientset) { forbid(cs, "get", "configmaps") },
			want:  map[string]string{},
			notes: []string{
				`you lack get on configmaps in namespace shop: LOG_LEVEL (configMap "env-config") is not set; ask for it or run without it`,
			},
			denied: 1,
		},
		{
			name: "fieldRef and resourceFieldRef from the pod, the node's allocatable for an unset limit",
			env: []corev1.EnvVar{
				from("POD_NAME", field("metadata.name")), from("POD_NAMESPACE", field("metadata.namespace")),
				from("POD_UID", field("metadata.uid")), from("POD_IP", field("status.podIP")), from("POD_IPS", field("status.podIPs")),
				from("HOST_IP", field("status.hostIP")), from("HOST_IPS", field("status.hostIPs")),
				from("NODE", field("spec.nodeName")), from("SA", field("spec.serviceAccountName")),
				from("APP", field("metadata.labels['app']")), from("NONE", field("metadata.labels['none']")),
				from("MEM_MI", res("", "limits.memory", "1Mi")), from("MEM_REQ", res("app", "requests.memory", "")),
				from("CPU_M", res("", "requests.cpu", "1m")), from("CPU_REQ", res("", "requests.cpu", "")),
				from("CPU_LIMIT", res("", "limits.cpu", "")),
				from("AGENT_MEM_GI", res(annotations.AgentContainerName, "limits.memory", "1Gi")),
			},
			want: map[string]string{
				"POD_NAME": "web-1", "POD_NAMESPACE": "shop", "POD_UID": "uid-1", "POD_IP": "10.0.0.7", "POD_IPS": "10.0.0.7,fd00::7",
				"HOST_IP": "192.168.1.2", "HOST_IPS": "192.168.1.2", "NODE": "n1", "SA": "web", "APP": "web", "NONE": "",
				"MEM_MI": "256", "MEM_REQ": "134217728", "CPU_M": "250", "CPU_REQ": "1", "CPU_LIMIT": "4", "AGENT_MEM_GI": "8",
			},
		},
		{
			name: "what cannot be resolved is noted: fileKeyRef, an unknown field, container or resource",
			env: []corev1.EnvVar{
				from("FROM_FILE", corev1.EnvVarSource{FileKeyRef: &corev1.FileKeySelector{VolumeName: "envs", Path: "app.env", Key: "TOKEN"}}),
				from("BAD_FIELD", field("spec.nope")),
				from("BAD_CONTAINER", res("ghost", "limits.memory", "")),
				from("BAD_RESOURCE", res("", "limits.pods", "")),
				from("NONE", corev1.EnvVarSource{}),
			},
			want: map[string]string{},
			notes: []string{
				`FROM_FILE is not set: it comes from the file app.env in volume "envs", which lives only in the pod`,
				`BAD_FIELD is not set: fieldPath "spec.nope" is not one the downward API offers`,
				`BAD_CONTAINER is not set: the pod has no container "ghost"`,
				`BAD_RESOURCE is not set: resource "limits.pods" is not one the downward API offers`,
				`NONE is not set: its valueFrom names no source detour knows`,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := testPod()
			pod.Spec.Containers[0].Env = tc.env
			pod.Spec.Containers[0].EnvFrom = tc.envFrom
			cs := fake.NewClientset(objects()...)
			if tc.react != nil {
				tc.react(cs)
			}
			env, notes, err := Env(context.Background(), cs, pod, "app")
			if err != nil {
				t.Fatalf("Env: %v", err)
			}
			if !maps.Equal(env, tc.want) {
				t.Errorf("env:\n got  %v\n want %v", env, tc.want)
			}
			check(t, "notes", whys(notes), tc.notes)
			denied := 0
			for _, n := range notes {
				if n.Denied {
					denied++
				}
			}
			if denied != tc.denied {
				t.Errorf("%d denied notes, want %d: %+v", denied, tc.denied, notes)
			}
		})
	}
}

func TestEnvNotePaths(t *testing.T) {
	pod := testPod()
	pod.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{Prefix: "DB_", SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}}}}
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "PW", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "password"}}}}
	cs := fake.NewClientset(objects()...)
	forbid(cs, "get", "secrets")
	_, notes, err := Env(context.Background(), cs, pod, "app")
	if err != nil {
		t.Fatal(err)
	}
	if len(notes) != 2 || notes[0].Path != "DB_*" || notes[0].Kind != "envFrom" || notes[1].Path != "PW" || notes[1].Kind != "secretKeyRef" {
		t.Errorf("notes = %+v", notes)
	}
}

func TestEnvReturnsOtherAPIErrorsWrapped(t *testing.T) {
	pod := testPod()
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "PW", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "password"}}}}
	cs := fake.NewClientset(objects()...)
	cs.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, k8sruntime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("apiserver restarting")
	})
	_, _, err := Env(context.Background(), cs, pod, "app")
	var status apierrors.APIStatus
	if err == nil || !errors.As(err, &status) || !apierrors.IsServiceUnavailable(err) || !strings.Contains(err.Error(), `get secret "db" in namespace shop`) {
		t.Fatalf("err = %v", err)
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "x", "B": "", "É": "utf"}
	for in, want := range map[string]string{
		"":             "",
		"plain":        "plain",
		"$(A)":         "x",
		"$(A)$(A)":     "xx",
		"pre$(A)post":  "prexpost",
		"$(B)":         "",
		"$(NOPE)":      "$(NOPE)",
		"$$(A)":        "$(A)",
		"$$$(A)":       "$x",
		"$$":           "$",
		"$":            "$",
		"a$":           "a$",
		"$A":           "$A",
		"$(A":          "$(A",
		"$(":           "$(",
		"$()":          "$()",
		"$(A)$(":       "x$(",
		"$(É)":         "utf",
		"$é":           "$é",
		"$(A)) ($(A)(": "x) (x(",
	} {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResourceValue(t *testing.T) {
	c := &corev1.Container{Resources: corev1.ResourceRequirements{
		Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1500m"), corev1.ResourceMemory: resource.MustParse("1537Ki"),
			"hugepages-2Mi": resource.MustParse("4Mi"), corev1.ResourceEphemeralStorage: resource.MustParse("1G")},
	}}
	for _, tc := range []struct{ res, divisor, want string }{
		{"limits.cpu", "", "2"},
		{"limits.cpu", "1m", "1500"},
		{"limits.cpu", "100m", "15"},
		{"limits.memory", "", "1573888"},
		{"limits.memory", "1Mi", "2"},
		{"limits.memory", "1Ki", "1537"},
		{"limits.hugepages-2Mi", "1Mi", "4"},
		{"limits.ephemeral-storage", "1M", "1000"},
		{"requests.cpu", "", "0"},
	} {
		fs := &corev1.ResourceFieldSelector{Resource: tc.res}
		if tc.divisor != "" {
			fs.Divisor = resource.MustParse(tc.divisor)
		}
		got, err := resourceValue(fs, c)
		if err != nil || got != tc.want {
			t.Errorf("%s / %q = %q, %v; want %q", tc.res, tc.divisor, got, err, tc.want)
		}
	}
	if _, err := resourceValue(&corev1.ResourceFieldSelector{Resource: "cpu"}, c); err == nil {
		t.Error("a resource with no limits./requests. side was accepted")
	}
}

func TestFieldValueSubscripts(t *testing.T) {
	pod := testPod()
	for in, want := range map[string]string{
		"metadata.labels['tier']":        "front",
		"metadata.annotations['owner']":  `team "a"`,
		"metadata.annotations['absent']": "",
	} {
		if got, err := fieldValue(pod, in); err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"metadata.name['x']", "['x']", "status.phase"} {
		if _, err := fieldValue(pod, bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}
