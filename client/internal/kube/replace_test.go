package kube

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/detour-dev/detour/client/internal/resolve"
	"github.com/detour-dev/detour/internal/annotations"
)

func TestReplaceValue(t *testing.T) {
	mine := annotations.ReplaceSpec{By: "alice@laptop", Grace: "30s"}.Encode()
	theirs := annotations.ReplaceSpec{By: "bob@desk", Grace: "1m0s"}.Encode()
	withReplace := func(kind, v string) resolve.Workload {
		_, w := webDeployment(1, true)
		w.Kind = kind
		if v != "" {
			w.Template.Annotations[annotations.Replace] = v
		}
		return w
	}
	for _, tc := range []struct {
		name    string
		w       resolve.Workload
		want    string
		reuse   bool
		wantErr error
		errHas  string
	}{
		{"fresh", withReplace(resolve.KindDeployment, ""), `{"by":"alice@laptop","grace":"45s"}`, false, nil, ""},
		{"a statefulset", withReplace(resolve.KindStatefulSet, ""), `{"by":"alice@laptop","grace":"45s"}`, false, nil, ""},
		{"mine already: no roll", withReplace(resolve.KindDeployment, mine), mine, true, nil, ""},
		{"someone else's", withReplace(resolve.KindDeployment, theirs), "", false, ErrReplacedByOther, "bob@desk"},
		{"a bare replicaset", withReplace(resolve.KindReplicaSet, ""), "", false, ErrNotReplaceable, "Deployments and StatefulSets"},
		{"malformed", withReplace(resolve.KindDeployment, "{"), "", false, annotations.ErrBadReplace, "kubectl -n ns edit deployment/web"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, reuse, err := ReplaceValue(tc.w, "alice@laptop", 45*time.Second)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("err = %v, want %v naming %q", err, tc.wantErr, tc.errHas)
				}
				return
			}
			if err != nil || got != tc.want || reuse != tc.reuse {
				t.Fatalf("= %q reuse %v err %v, want %q reuse %v", got, reuse, err, tc.want, tc.reuse)
			}
		})
	}
}

// TestRemoveReplaceTestsTheValue: the app comes back only for the replace
// this intercept made; another developer's since stays, and a workload
// already given back (or gone) is no error.
func TestRemoveReplaceTestsTheValue(t *testing.T) {
	mine := annotations.ReplaceSpec{By: "alice@laptop", Grace: "1m0s"}.Encode()
	theirs := annotations.ReplaceSpec{By: "bob@desk", Grace: "1m0s"}.Encode()
	ctx := context.Background()
	for _, tc := range []struct {
		name, on string
		left     bool
	}{{"mine", mine, false}, {"someone else's since", theirs, true}, {"already gone", "", false}} {
		t.Run(tc.name, func(t *testing.T) {
			d, w := webDeployment(1, true)
			if tc.on != "" {
				d.Spec.Template.Annotations[annotations.Replace] = tc.on
			}
			cs := fake.NewSimpleClientset(d)
			if err := RemoveReplace(ctx, cs, "ns", w.Ref(), mine); err != nil {
				t.Fatal(err)
			}
			got, _ := cs.AppsV1().Deployments("ns").Get(ctx, "web", metav1.GetOptions{})
			v, ok := got.Spec.Template.Annotations[annotations.Replace]
			if ok != tc.left || (ok && v != tc.on) || got.Spec.Template.Annotations[annotations.Inject] != annotations.InjectEnabled {
				t.Fatalf("template annotations %v: want replace left %v, inject kept", got.Spec.Template.Annotations, tc.left)
			}
		})
	}
	if err := RemoveReplace(ctx, fake.NewSimpleClientset(), "ns", "deployment/gone", mine); err != nil {
		t.Errorf("a workload that is gone: %v", err)
	}
	if err := RemoveReplace(ctx, fake.NewSimpleClientset(), "ns", "web", mine); err == nil {
		t.Error("a ref without a kind was taken")
	}
}

// TestWaitForReplacedWaitsForReplacedPods: a ready agent is not enough;
// the pod must run replaced with this value.
func TestWaitForReplacedWaitsForReplacedPods(t *testing.T) {
	value := annotations.ReplaceSpec{By: "alice@laptop", Grace: "1m0s"}.Encode()
	d, w := webDeployment(1, true)
	old := pod("old", corev1.PodRunning, true, false)
	cs := fake.NewSimpleClientset(d, old)
	var out bytes.Buffer
	if _, err := WaitForReplaced(context.Background(), cs, w, value, 600*time.Millisecond, &out); err == nil {
		t.Fatal("a pod that is not replaced passed")
	}
	if !strings.Contains(out.String(), "0 of 1 pods have replaced") {
		t.Errorf("progress: %q", out.String())
	}
	replaced := pod("new", corev1.PodRunning, true, false)
	replaced.Annotations = map[string]string{
		annotations.Injected: annotations.Status{Mode: annotations.ModeRename, Container: "app", Replaced: true}.Encode(),
		annotations.Replace:  value,
	}
	cs = fake.NewSimpleClientset(d, replaced)
	pods, err := WaitForReplaced(context.Background(), cs, w, value, 2*time.Second, nil)
	if err != nil || len(pods) != 1 || pods[0].Name != "new" {
		t.Fatalf("pods %v, err %v", names(pods), err)
	}
}
