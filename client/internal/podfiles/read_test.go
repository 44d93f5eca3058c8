package podfiles

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/detour-dev/detour/internal/annotations"
)

func TestRead(t *testing.T) {
	podinfo := func(items ...corev1.DownwardAPIVolumeFile) corev1.Volume {
		return corev1.Volume{Name: "podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: items}}}
	}
	field := func(p, fieldPath string) corev1.DownwardAPIVolumeFile {
		return corev1.DownwardAPIVolumeFile{Path: p, FieldRef: &corev1.ObjectFieldSelector{FieldPath: fieldPath}}
	}
	res := func(p, r, divisor string) corev1.DownwardAPIVolumeFile {
		f := corev1.DownwardAPIVolumeFile{Path: p, ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "app", Resource: r}}
		if divisor != "" {
			f.ResourceFieldRef.Divisor = resource.MustParse(divisor)
		}
		return f
	}
	for _, tc := range []struct {
		name        string
		pod         func(*corev1.Pod)
		volumes     []corev1.Volume
		mounts      []corev1.VolumeMount
		react       func(*fake.Clientset)
		files       []string
		notMirrored []string
		denied      []string
	}{
		{
			name:    "a configMap's every key, BinaryData too, at the default mode",
			volumes: []corev1.Volume{configMapVolume("config", "app-config")},
			mounts:  []corev1.VolumeMount{mountAt("config", "/etc/config")},
			files: []string{
				`/etc/config/app.yaml 0644 mount=/etc/config "port: 8080\n"`,
				`/etc/config/log.level 0644 mount=/etc/config "debug"`,
				`/etc/config/logo.png 0644 mount=/etc/config "\x89PNG"`,
			},
		},
		{
			name: "items with paths and modes; defaultMode for the rest",
			volumes: []corev1.Volume{func() corev1.Volume {
				v := configMapVolume("config", "app-config",
					corev1.KeyToPath{Key: "app.yaml", Path: "conf/app.yaml", Mode: ptr(int32(0o600))},
					corev1.KeyToPath{Key: "log.level", Path: "level"})
				v.ConfigMap.DefaultMode = ptr(int32(0o440))
				return v
			}()},
			mounts: []corev1.VolumeMount{mountAt("config", "/etc/config")},
			files: []string{
				`/etc/config/conf/app.yaml 0600 mount=/etc/config "port: 8080\n"`,
				`/etc/config/level 0440 mount=/etc/config "debug"`,
			},
		},
		{
			name: "an item's missing key is noted, unless optional",
			volumes: []corev1.Volume{
				configMapVolume("required", "app-config", corev1.KeyToPath{Key: "nope", Path: "nope"}),
				func() corev1.Volume {
					v := configMapVolume("optional", "app-config", corev1.KeyToPath{Key: "nope", Path: "nope"}, corev1.KeyToPath{Key: "log.level", Path: "level"})
					v.ConfigMap.Optional = ptr(true)
					return v
				}(),
			},
			mounts:      []corev1.VolumeMount{mountAt("required", "/etc/a"), mountAt("optional", "/etc/b")},
			files:       []string{`/etc/b/level 0644 mount=/etc/b "debug"`},
			notMirrored: []string{`configMap "app-config" has no key "nope": /etc/a/nope is not mirrored`},
		},
		{
			name: "a missing optional source is skipped; a missing required one is noted",
			volumes: []corev1.Volume{
				func() corev1.Volume {
					v := configMapVolume("opt", "absent")
					v.ConfigMap.Optional = ptr(true)
					return v
				}(),
				func() corev1.Volume {
					v := secretVolume("opt-secret", "absent")
					v.Secret.Optional = ptr(true)
					return v
				}(),
				secretVolume("gone", "gone"),
			},
			mounts:      []corev1.VolumeMount{mountAt("opt", "/etc/opt"), mountAt("opt-secret", "/etc/opt-secret"), mountAt("gone", "/etc/gone")},
			notMirrored: []string{`secret "gone" was not found in namespace shop: /etc/gone is not mirrored`},
		},
		{
			name:    "a Secret, with items and modes",
			volumes: []corev1.Volume{secretVolume("tls", "tls", corev1.KeyToPath{Key: "tls.key", Path: "key.pem", Mode: ptr(int32(0o400))})},
			mounts:  []corev1.VolumeMount{mountAt("tls", "/etc/tls")},
			files:   []string{`/etc/tls/key.pem 0400 mount=/etc/tls "KEY"`},
		},
		{
			name:    "a Secret the user may not get: a note naming verb, resource and namespace; the rest is mirrored",
			volumes: []corev1.Volume{secretVolume("tls", "tls"), configMapVolume("config", "app-config", corev1.KeyToPath{Key: "app.yaml", Path: "app.yaml"})},
			mounts:  []corev1.VolumeMount{mountAt("tls", "/etc/tls"), mountAt("config", "/etc/config")},
			react:   func(cs *fake.Clientset) { forbid(cs, "get", "secrets") },
			files:   []string{`/etc/config/app.yaml 0644 mount=/etc/config "port: 8080\n"`},
			denied:  []string{`you lack get on secrets in namespace shop: /etc/tls (secret "tls") is not mirrored; ask for it or run without it`},
		},
		{
			name:    "a ConfigMap the user may not get",
			volumes: []corev1.Volume{configMapVolume("config", "app-config")},
			mounts:  []corev1.VolumeMount{mountAt("config", "/etc/config")},
			react:   func(cs *fake.Clientset) { forbid(cs, "get", "configmaps") },
			denied:  []string{`you lack get on configmaps in namespace shop: /etc/config (configMap "app-config") is not mirrored; ask for it or run without it`},
		},
		{
			name:    "the service-account volume: a TokenRequest, ca.crt from kube-root-ca.crt, the namespace",
			volumes: []corev1.Volume{kubeAPIAccess()},
			mounts:  []corev1.VolumeMount{mountAt("kube-api-access-x", saDir)},
			react:   func(cs *fake.Clientset) { new(tokens).install(cs) },
			files: []string{
				saDir + `/token 0644 mount=` + saDir + ` "token:shop/web:aud=:exp=3607"`,
				saDir + `/ca.crt 0644 mount=` + saDir + ` "CA PEM"`,
				saDir + `/namespace 0644 mount=` + saDir + ` "shop"`,
			},
		},
		{
			name: "a token with an audience, for a pod with fsGroup: 0600 as the kubelet writes it",
			pod: func(p *corev1.Pod) {
				p.Spec.SecurityContext = &corev1.PodSecurityContext{FSGroup: ptr(int64(2000))}
				p.Spec.ServiceAccountName = ""
			},
			volumes: []corev1.Volume{{Name: "vault", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				DefaultMode: ptr(int32(0o444)),
				Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
					Audience: "vault", ExpirationSeconds: ptr(int64(600)), Path: "vault/token"}}},
			}}}},
			mounts: []corev1.VolumeMount{mountAt("vault", "/var/run/vault")},
			react:  func(cs *fake.Clientset) { new(tokens).install(cs) },
			files:  []string{`/var/run/vault/vault/token 0600 mount=/var/run/vault "token:shop/default:aud=vault:exp=600"`},
		},
		{
			name:    "a token the user may not create: a note; ca.crt and namespace still mirrored",
			volumes: []corev1.Volume{kubeAPIAccess()},
			mounts:  []corev1.VolumeMount{mountAt("kube-api-access-x", saDir)},
			react:   forbidTokens,
			files: []string{
				saDir + `/ca.crt 0644 mount=` + saDir + ` "CA PEM"`,
				saDir + `/namespace 0644 mount=` + saDir + ` "shop"`,
			},
			denied: []string{`you lack create on serviceaccounts/token in namespace shop: ` + saDir + `/token (service account "web") is not mirrored; ask for it or run without it`},
		},
		{
			name: "a projected volume whose Secret is refused keeps its ConfigMap",
			volumes: []corev1.Volume{{Name: "bundle", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{
					{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}}},
					{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "env-config"},
						Items: []corev1.KeyToPath{{Key: "PORT", Path: "port", Mode: ptr(int32(0o400))}}}},
					{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Optional: ptr(true)}},
				},
			}}}},
			mounts: []corev1.VolumeMount{mountAt("bundle", "/etc/bundle")},
			react:  func(cs *fake.Clientset) { forbid(cs, "get", "secrets") },
			files:  []string{`/etc/bundle/port 0400 mount=/etc/bundle "8080"`},
			denied: []string{
				`you lack get on secrets in namespace shop: /etc/bundle (secret "db") is not mirrored; ask for it or run without it`,
				`you lack get on secrets in namespace shop: /etc/bundle (secret "absent") is not mirrored; ask for it or run without it`,
			},
		},
		{
			name: "downwardAPI fields and resources, with divisors and the node's allocatable for an unset limit",
			volumes: []corev1.Volume{podinfo(
				field("labels", "metadata.labels"),
				field("annotations", "metadata.annotations"),
				field("owner", "metadata.annotations['owner']"),
				field("name", "metadata.name"),
				field("uid", "metadata.uid"),
				res("mem_limit_mi", "limits.memory", "1Mi"),
				res("cpu_request_m", "requests.cpu", "1m"),
				res("cpu_limit", "limits.cpu", ""),
				func() corev1.DownwardAPIVolumeFile {
					f := res("agent_mem", "limits.memory", "1Gi")
					f.ResourceFieldRef.ContainerName = annotations.AgentContainerName
					f.Mode = ptr(int32(0o400))
					return f
				}(),
			)},
			mounts: []corev1.VolumeMount{mountAt("podinfo", "/etc/podinfo")},
			files: []string{
				`/etc/podinfo/labels 0644 mount=/etc/podinfo "app=\"web\"\ntier=\"front\""`,
				`/etc/podinfo/annotations 0644 mount=/etc/podinfo "owner=\"team \\\"a\\\"\""`,
				`/etc/podinfo/owner 0644 mount=/etc/podinfo "team \"a\""`,
				`/etc/podinfo/name 0644 mount=/etc/podinfo "web-1"`,
				`/etc/podinfo/uid 0644 mount=/etc/podinfo "uid-1"`,
				`/etc/podinfo/mem_limit_mi 0644 mount=/etc/podinfo "256"`,
				`/etc/podinfo/cpu_request_m 0644 mount=/etc/podinfo "250"`,
				`/etc/podinfo/cpu_limit 0644 mount=/etc/podinfo "4"`,
				`/etc/podinfo/agent_mem 0400 mount=/etc/podinfo "8"`,
			},
		},
		{
			name: "a pod-level limit stands in before the node's allocatable",
			pod: func(p *corev1.Pod) {
				p.Spec.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1500m")}}
			},
			volumes: []corev1.Volume{podinfo(res("cpu_limit", "limits.cpu", ""))},
			mounts:  []corev1.VolumeMount{mountAt("podinfo", "/etc/podinfo")},
			react:   func(cs *fake.Clientset) { forbid(cs, "get", "nodes") },
			files:   []string{`/etc/podinfo/cpu_limit 0644 mount=/etc/podinfo "2"`},
		},
		{
			name:    "a node the user may not get, for an unset limit",
			volumes: []corev1.Volume{podinfo(res("cpu_limit", "limits.cpu", ""), field("name", "metadata.name"))},
			mounts:  []corev1.VolumeMount{mountAt("podinfo", "/etc/podinfo")},
			react:   func(cs *fake.Clientset) { forbid(cs, "get", "nodes") },
			files:   []string{`/etc/podinfo/name 0644 mount=/etc/podinfo "web-1"`},
			denied:  []string{`you lack get on nodes: /etc/podinfo/cpu_limit (node "n1", whose allocatable stands in for the unset limits.cpu) is not mirrored; ask for it or run without it`},
		},
		{
			name:        "a fieldPath the downward API does not offer",
			volumes:     []corev1.Volume{podinfo(field("ip", "status.nope"))},
			mounts:      []corev1.VolumeMount{mountAt("podinfo", "/etc/podinfo")},
			notMirrored: []string{`/etc/podinfo/ip is not mirrored: fieldPath "status.nope" is not one the downward API offers`},
		},
		{
			name:    "subPath naming a file: one file at mountPath",
			volumes: []corev1.Volume{configMapVolume("config", "app-config")},
			mounts:  []corev1.VolumeMount{{Name: "config", MountPath: "/etc/app.yaml", SubPath: "app.yaml"}},
			files:   []string{`/etc/app.yaml 0644 mount=/etc/app.yaml "port: 8080\n"`},
		},
		{
			name: "subPath naming a directory of the volume",
			volumes: []corev1.Volume{configMapVolume("config", "app-config",
				corev1.KeyToPath{Key: "app.yaml", Path: "conf/app.yaml"}, corev1.KeyToPath{Key: "log.level", Path: "level"})},
			mounts: []corev1.VolumeMount{{Name: "config", MountPath: "/srv/conf", SubPath: "conf"}},
			files:  []string{`/srv/conf/app.yaml 0644 mount=/srv/conf "port: 8080\n"`},
		},
		{
			name:        "subPath in none of the volume's files",
			volumes:     []corev1.Volume{configMapVolume("config", "app-config")},
			mounts:      []corev1.VolumeMount{{Name: "config", MountPath: "/etc/other.yaml", SubPath: "other.yaml"}},
			notMirrored: []string{`/etc/other.yaml is not mirrored: its subPath "other.yaml" is in none of the volume's files`},
		},
		{
			name:    "subPath of a Secret the user may not get: the denial alone",
			volumes: []corev1.Volume{secretVolume("tls", "tls")},
			mounts:  []corev1.VolumeMount{{Name: "tls", MountPath: "/etc/tls.crt", SubPath: "tls.crt"}},
			react:   func(cs *fake.Clientset) { forbid(cs, "get", "secrets") },
			denied:  []string{`you lack get on secrets in namespace shop: /etc/tls.crt (secret "tls") is not mirrored; ask for it or run without it`},
		},
		{
			name:        "subPathExpr",
			volumes:     []corev1.Volume{configMapVolume("config", "app-config")},
			mounts:      []corev1.VolumeMount{{Name: "config", MountPath: "/etc/x", SubPathExpr: "$(POD_NAME)"}},
			notMirrored: []string{`/etc/x is not mirrored: its subPathExpr "$(POD_NAME)" is expanded only in the pod`},
		},
		{
			name: "emptyDir, PVC, hostPath and the rest are listed, not mirrored",
			volumes: []corev1.Volume{
				{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data-web-1"}}},
				{Name: "logs", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/log"}}},
				{Name: "csi", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "x"}}},
				{Name: "eph", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{}}},
			},
			mounts: []corev1.VolumeMount{mountAt("cache", "/cache"), mountAt("data", "/data"), mountAt("logs", "/var/log/node"), mountAt("csi", "/mnt/csi"), mountAt("eph", "/scratch"), mountAt("nope", "/nope")},
			notMirrored: []string{
				`emptyDir /cache is not mirrored: it lives only in the pod`,
				`persistentVolumeClaim /data (claim "data-web-1") is not mirrored: its data stays on the cluster's storage`,
				`hostPath /var/log/node (/var/log on the node) is not mirrored: it is the node's filesystem`,
				`csi /mnt/csi is not mirrored: detour mirrors only configMap, secret, downwardAPI and projected volumes`,
				`ephemeral /scratch is not mirrored: its storage exists only for the pod`,
				`/nope is not mirrored: the pod has no volume "nope"`,
			},
		},
		{
			name:        "an item path climbing out of the volume",
			volumes:     []corev1.Volume{configMapVolume("config", "app-config", corev1.KeyToPath{Key: "app.yaml", Path: "../passwd"})},
			mounts:      []corev1.VolumeMount{mountAt("config", "/etc/config")},
			notMirrored: []string{`"../passwd" under /etc/config is not mirrored: it is not a path inside the volume`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := testPod()
			pod.Spec.Volumes = tc.volumes
			pod.Spec.Containers[0].VolumeMounts = tc.mounts
			if tc.pod != nil {
				tc.pod(pod)
			}
			cs := fake.NewClientset(objects()...)
			if tc.react != nil {
				tc.react(cs)
			}
			plan, err := Read(context.Background(), cs, pod, "app")
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			check(t, "files", fileLines(plan.Files), tc.files)
			check(t, "not mirrored", whys(plan.NotMirrored), tc.notMirrored)
			check(t, "denied", whys(plan.Denied), tc.denied)
			for _, n := range plan.Denied {
				if !n.Denied {
					t.Errorf("denied note without Denied: %+v", n)
				}
			}
		})
	}
}

func check(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got  %s\n want %s", what, strings.Join(got, "\n      "), strings.Join(want, "\n      "))
	}
}

func TestReadNoteFields(t *testing.T) {
	pod := testPod()
	pod.Spec.Volumes = []corev1.Volume{secretVolume("tls", "tls"), {Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{mountAt("tls", "/etc/tls"), mountAt("cache", "/cache")}
	cs := fake.NewClientset(objects()...)
	forbid(cs, "get", "secrets")
	plan, err := Read(context.Background(), cs, pod, "app")
	if err != nil {
		t.Fatal(err)
	}
	want := []Note{{Path: "/etc/tls", Kind: "secret", Denied: true, Why: plan.Denied[0].Why}}
	if !slices.Equal(plan.Denied, want) {
		t.Errorf("denied = %+v, want %+v", plan.Denied, want)
	}
	if n := plan.NotMirrored; len(n) != 1 || n[0].Path != "/cache" || n[0].Kind != "emptyDir" || n[0].Denied || n[0].String() != n[0].Why {
		t.Errorf("not mirrored = %+v", n)
	}
}

func TestTokenRequestIsBoundToThePod(t *testing.T) {
	pod := testPod()
	pod.Spec.Volumes = []corev1.Volume{kubeAPIAccess()}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{mountAt("kube-api-access-x", saDir)}
	cs := fake.NewClientset(objects()...)
	tk := new(tokens)
	tk.install(cs)
	if _, err := Read(context.Background(), cs, pod, "app"); err != nil {
		t.Fatal(err)
	}
	if len(tk.reqs) != 1 {
		t.Fatalf("%d token requests, want 1", len(tk.reqs))
	}
	r := tk.reqs[0]
	b := r.spec.BoundObjectRef
	if r.namespace != ns || r.serviceAccount != "web" || r.spec.Audiences != nil || *r.spec.ExpirationSeconds != 3607 ||
		b == nil || b.Kind != "Pod" || b.APIVersion != "v1" || b.Name != "web-1" || b.UID != "uid-1" {
		t.Errorf("token request %+v (bound to %+v)", r, b)
	}
}

func TestReadFetchesEachObjectOnce(t *testing.T) {
	pod := testPod()
	pod.Spec.Volumes = []corev1.Volume{
		secretVolume("a", "tls", corev1.KeyToPath{Key: "tls.crt", Path: "crt"}),
		secretVolume("b", "tls", corev1.KeyToPath{Key: "tls.key", Path: "key"}),
		secretVolume("c", "gone"), secretVolume("d", "gone"),
	}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{mountAt("a", "/a"), mountAt("b", "/b"), mountAt("c", "/c"), mountAt("d", "/d")}
	cs := fake.NewClientset(objects()...)
	plan, err := Read(context.Background(), cs, pod, "app")
	if err != nil {
		t.Fatal(err)
	}
	gets := 0
	for _, a := range cs.Actions() {
		if a.GetVerb() == "get" {
			gets++
		}
	}
	if gets != 2 || len(plan.Files) != 2 || len(plan.NotMirrored) != 2 {
		t.Errorf("%d gets (want 2), files %v, notes %v", gets, fileLines(plan.Files), whys(plan.NotMirrored))
	}
}

func TestReadReturnsOtherAPIErrorsWrapped(t *testing.T) {
	pod := testPod()
	pod.Spec.Volumes = []corev1.Volume{configMapVolume("config", "app-config")}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{mountAt("config", "/etc/config")}
	cs := fake.NewClientset(objects()...)
	cs.PrependReactor("get", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewInternalError(errors.New("etcd is down"))
	})
	_, err := Read(context.Background(), cs, pod, "app")
	if err == nil || !apierrors.IsInternalError(err) || !strings.Contains(err.Error(), `get configMap "app-config" in namespace shop: `) {
		t.Fatalf("err = %v, want a wrapped internal error naming the configMap", err)
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		t.Errorf("the API's error is not in the chain: %v", err)
	}
}

func TestReadUnknownContainer(t *testing.T) {
	_, err := Read(context.Background(), fake.NewClientset(), testPod(), "nope")
	if !errors.Is(err, ErrNoContainer) || !strings.Contains(err.Error(), `no container "nope" (it has app, detour-agent)`) {
		t.Fatalf("err = %v", err)
	}
	if _, _, err := Env(context.Background(), fake.NewClientset(), testPod(), "nope"); !errors.Is(err, ErrNoContainer) {
		t.Fatalf("Env: err = %v", err)
	}
}

func TestAppContainer(t *testing.T) {
	for _, tc := range []struct {
		name, annotation string
		unset            bool
		want             string
		err              error
	}{
		{name: "the webhook's choice", annotation: annotations.Status{Mode: annotations.ModeRename, Container: "app"}.Encode(), want: "app"},
		{name: "not injected", unset: true, err: ErrNoContainer},
		{name: "malformed", annotation: "{", err: annotations.ErrBadStatus},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := testPod()
			if !tc.unset {
				pod.Annotations[annotations.Injected] = tc.annotation
			}
			got, err := AppContainer(pod)
			if got != tc.want || !errors.Is(err, tc.err) {
				t.Errorf("AppContainer = %q, %v; want %q, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

// TestTokenTTLIsTheShortest: Plan.TokenTTL is the shortest token
// lifetime mirrored (a caller renews before it), zero without tokens.
func TestTokenTTLIsTheShortest(t *testing.T) {
	pod := testPod()
	pod.Spec.Volumes = []corev1.Volume{kubeAPIAccess(), {Name: "vault", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "vault", ExpirationSeconds: ptr(int64(600)), Path: "token"}}}}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{mountAt("kube-api-access-x", saDir), mountAt("vault", "/var/run/vault")}
	cs := fake.NewClientset(objects()...)
	new(tokens).install(cs)
	plan, err := Read(context.Background(), cs, pod, "app")
	if err != nil || plan.TokenTTL != 600*time.Second {
		t.Fatalf("TokenTTL %s, %v; want 10m0s", plan.TokenTTL, err)
	}
	pod.Spec.Volumes, pod.Spec.Containers[0].VolumeMounts = []corev1.Volume{configMapVolume("config", "app-config")}, []corev1.VolumeMount{mountAt("config", "/etc/config")}
	if plan, err := Read(context.Background(), cs, pod, "app"); err != nil || plan.TokenTTL != 0 {
		t.Fatalf("without tokens: TokenTTL %s, %v", plan.TokenTTL, err)
	}
}
