package podfiles

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestMountPlan(t *testing.T) {
	f := func(p, mount, data string) File { return File{Path: p, Mount: mount, Data: []byte(data), Mode: 0o644} }
	for _, tc := range []struct {
		name  string
		files []File
		want  []Mount
	}{
		{name: "nothing", files: nil, want: nil},
		{
			name:  "one directory, item paths with subdirectories kept relative",
			files: []File{f("/etc/config/app.yaml", "/etc/config", "a"), f("/etc/config/conf/x.yaml", "/etc/config", "x")},
			want: []Mount{{Dir: "/etc/config", Files: map[string]File{
				"app.yaml":    f("/etc/config/app.yaml", "/etc/config", "a"),
				"conf/x.yaml": f("/etc/config/conf/x.yaml", "/etc/config", "x"),
			}}},
		},
		{
			name:  "a subPath file is mounted alone, its directory left as it is",
			files: []File{f("/etc/app.yaml", "/etc/app.yaml", "a"), f("/etc/other.yaml", "/etc/other.yaml", "o")},
			want: []Mount{
				{Dir: "/etc", Files: map[string]File{"app.yaml": f("/etc/app.yaml", "/etc/app.yaml", "a")}, SingleFile: true},
				{Dir: "/etc", Files: map[string]File{"other.yaml": f("/etc/other.yaml", "/etc/other.yaml", "o")}, SingleFile: true},
			},
		},
		{
			name: "nested mounts come after the mounts that hold them",
			files: []File{
				f("/etc/config/extra/e", "/etc/config/extra", "e"),
				f("/etc/config/app.yaml", "/etc/config/app.yaml", "sub"),
				f("/etc/config-b/b", "/etc/config-b", "b"),
				f("/etc/config/c", "/etc/config", "c"),
				f("/a/b", "/a/b", "ab"),
			},
			want: []Mount{
				{Dir: "/a", Files: map[string]File{"b": f("/a/b", "/a/b", "ab")}, SingleFile: true},
				{Dir: "/etc/config", Files: map[string]File{"c": f("/etc/config/c", "/etc/config", "c")}},
				{Dir: "/etc/config-b", Files: map[string]File{"b": f("/etc/config-b/b", "/etc/config-b", "b")}},
				{Dir: "/etc/config", Files: map[string]File{"app.yaml": f("/etc/config/app.yaml", "/etc/config/app.yaml", "sub")}, SingleFile: true},
				{Dir: "/etc/config/extra", Files: map[string]File{"e": f("/etc/config/extra/e", "/etc/config/extra", "e")}},
			},
		},
		{
			name:  "no Mount, or a Path outside it: mounted alone",
			files: []File{f("/etc/x", "", "x"), f("/etc/y", "/srv", "y"), f("/etc/yz", "/etc/y", "yz")},
			want: []Mount{
				{Dir: "/etc", Files: map[string]File{"x": f("/etc/x", "", "x")}, SingleFile: true},
				{Dir: "/etc", Files: map[string]File{"y": f("/etc/y", "/srv", "y")}, SingleFile: true},
				{Dir: "/etc", Files: map[string]File{"yz": f("/etc/yz", "/etc/y", "yz")}, SingleFile: true},
			},
		},
		{
			name:  "paths are cleaned; the last of duplicates wins",
			files: []File{f("/etc/config//a", "/etc/config/", "1"), f("/etc/config/a", "/etc/config", "2")},
			want:  []Mount{{Dir: "/etc/config", Files: map[string]File{"a": f("/etc/config/a", "/etc/config", "2")}}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := MountPlan(tc.files); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("MountPlan:\n got  %+v\n want %+v", got, tc.want)
			}
		})
	}
}

func TestMountTarget(t *testing.T) {
	dir := Mount{Dir: "/etc/config", Files: map[string]File{"a": {}, "b": {}}}
	single := Mount{Dir: "/etc", Files: map[string]File{"app.yaml": {}}, SingleFile: true}
	if dir.Target() != "/etc/config" || single.Target() != "/etc/app.yaml" {
		t.Errorf("targets %q, %q", dir.Target(), single.Target())
	}
}

// TestReadThenMountPlan is the path the namespace side takes: the
// service-account volume is one tmpfs, a subPath file one bind inside
// another volume's directory.
func TestReadThenMountPlan(t *testing.T) {
	pod := testPod()
	pod.Spec.Volumes = []corev1.Volume{kubeAPIAccess(), configMapVolume("config", "app-config"), secretVolume("tls", "tls")}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{
		mountAt("kube-api-access-x", saDir),
		mountAt("tls", "/etc/app"),
		{Name: "config", MountPath: "/etc/app/app.yaml", SubPath: "app.yaml"},
	}
	cs := fake.NewClientset(objects()...)
	new(tokens).install(cs)
	plan, err := Read(context.Background(), cs, pod, "app")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range MountPlan(plan.Files) {
		names := make([]string, 0, len(m.Files))
		for n := range m.Files {
			names = append(names, n)
		}
		got = append(got, m.Target()+" "+map[bool]string{true: "file", false: "dir"}[m.SingleFile]+" "+joinSorted(names))
	}
	check(t, "mounts", got, []string{
		"/etc/app dir tls.crt,tls.key",
		"/etc/app/app.yaml file app.yaml",
		saDir + " dir ca.crt,namespace,token",
	})
}

func joinSorted(s []string) string {
	slices.Sort(s)
	return strings.Join(s, ",")
}
