//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"go.uber.org/zap"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/detour-dev/detour/client"
	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/tunnel"
)

// takeoverAttempt is TestSecurity's check that holding an intercept is
// proven, not claimed: mallory, another developer with her own
// kubeconfig and nothing but pods get/list and pods/portforward, lists the
// agent's intercepts, copies every identity it shows of the holder (the
// user label; before the fix also the client id), says hello with them
// and asks for the same intercept. Refused; the holder's traffic still
// reaches the holder's workstation.
func takeoverAttempt(ctx context.Context, t *testing.T, cfg *rest.Config, cs kubernetes.Interface, ns string, pod *corev1.Pod, url, holderAnswer string) {
	const sa = "sec-mallory"
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	secGrant(ctx, t, cs, ns, sa, sa, []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{""}, Resources: []string{"pods/portforward"}, Verbs: []string{"create"}},
	})
	tok, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: new(int64(900))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mcfg, err := clientcmd.BuildConfigFromFlags("", secKubeconfig(t, cfg, tok.Status.Token, ns))
	if err != nil {
		t.Fatal(err)
	}
	mcs := kubernetes.NewForConfigOrDie(mcfg)
	var local uint16
	eventually(t, 30*time.Second, "mallory's RBAC takes effect", func() bool {
		if _, err := mcs.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{}); err != nil {
			return false
		}
		return true
	})
	local = portForward(ctx, t, mcfg, mcs, pod, annotations.TunnelPort)[0]
	open := func(opts client.Options) *client.Session {
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", local))
		if err != nil {
			t.Fatal(err)
		}
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		opts.Log = zap.NewNop()
		s, err := client.Open(octx, conn, opts)
		if err != nil {
			t.Fatalf("mallory's session: %v", err)
		}
		return s
	}
	spy := open(client.Options{ClientID: "mallory", User: "mallory@elsewhere"})
	list, err := spy.List(ctx)
	spy.Close()
	if err != nil || len(list) == 0 {
		t.Fatalf("mallory's list: %v, %v", list, err)
	}
	victim := list[0]
	// Whatever the agent publishes about the holder, as JSON: copy it all.
	raw, _ := json.Marshal(victim)
	var shown map[string]any
	_ = json.Unmarshal(raw, &shown)
	clientID, _ := shown["clientId"].(string)
	if clientID == "" {
		clientID = "copied-" + victim.Holder
	}
	t.Logf("the agent shows mallory %s", raw)
	impostor := open(client.Options{ClientID: clientID, User: victim.Holder})
	defer impostor.Close()
	sink := localServer(t, "mallory")
	_, err = impostor.CreateIntercept(ctx, client.InterceptSpec{Name: victim.Name, Port: victim.Port, Mechanism: victim.Mechanism, LocalAddr: fmt.Sprintf("127.0.0.1:%d", sink)})
	if !errors.Is(err, tunnel.ErrAlreadyIntercepted) {
		t.Fatalf("mallory re-created %q with the holder's listed identity: err %v, want ErrAlreadyIntercepted", victim.Name, err)
	}
	t.Logf("refused: %v", err)
	if !waitForSteady(t, url, holderAnswer, 5, time.Minute) {
		t.Fatalf("the holder's traffic no longer reaches the holder after the attempt")
	}
}
