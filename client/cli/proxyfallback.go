package cli

import (
	"context"
	"crypto/rand"
	"fmt"
	"maps"
	"strings"

	"go.uber.org/zap"

	"github.com/detour-dev/detour/client/internal/clusternet"
	"github.com/detour-dev/detour/client/internal/proxynet"
)

// runProxyFallback runs r.Command directly, on the workstation's own
// network, when it cannot have its own namespaces (why: nsexec's error,
// which names the cause and the fix). A SOCKS5 and an HTTP proxy on
// 127.0.0.1 give it the same DNS and routing as the namespace would, for
// the programs that honour the proxy variables; the others reach what the
// workstation reaches. --expose and the intercept's local port need
// nothing here: CMD listens on the workstation's own 127.0.0.1 itself.
func runProxyFallback(ctx context.Context, netw *clusternet.Net, env map[string]string, r ClusterRun, why error) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	search, ndots := netw.DNSSearch()
	px, err := proxynet.Serve(ctx, proxynet.Config{
		Dialer:   netw,
		Resolver: &proxynet.StubResolver{Resolve: netw.Resolve, Search: search, Ndots: ndots},
		// Any local user could reach 127.0.0.1: only CMD gets the password.
		Password: rand.Text(),
		Log:      zap.NewNop(),
	})
	if err != nil {
		return 0, fmt.Errorf("%v; the proxy fallback failed too: %w", why, err)
	}
	defer func() { cancel(); <-px.Done() }()
	files := ""
	if len(r.Trees) > 0 { // they need the private mount namespace
		files = "; the pod's files are not at their paths"
	}
	fmt.Fprintf(r.Stderr, "detour: %s; running %s with the proxy fallback instead (SOCKS5 %s, HTTP %s): only programs that honour ALL_PROXY/HTTP_PROXY/HTTPS_PROXY see the cluster%s\n",
		strings.ReplaceAll(why.Error(), "\n", " "), r.Command[0], px.SOCKS, px.HTTP, files)
	cmdEnv := mergeEnv(env, r.UserEnv)
	maps.Copy(cmdEnv, px.Env()) // over the app's own proxy settings
	return runCommand(ctx, r.Command, cmdEnv)
}
