package cli

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"golang.org/x/term"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/detour-dev/detour/client/internal/resolve"
	"github.com/detour-dev/detour/internal/annotations"
	"github.com/detour-dev/detour/tunnel"
)

// previewFlags are the preview-URL flags of detour intercept.
type previewFlags struct {
	enabled bool
	host    string
	port    int
	tls     bool
	l5      string
}

func addPreviewFlags(fl *pflag.FlagSet, p *previewFlags) {
	fl.BoolVar(&p.enabled, "preview-url", false, "http: make a shareable link that routes a browser's requests to you, no header plugin needed (default from config intercept.previewURL; --preview-url=false turns it off)")
	fl.StringVar(&p.host, "ingress-host", "", "preview URL: the address the cluster's ingress (or Service) is reached at (asked for in a terminal when not given)")
	fl.IntVar(&p.port, "ingress-port", 0, "preview URL: the ingress port (required with --ingress-host)")
	fl.BoolVar(&p.tls, "ingress-tls", false, "preview URL: the ingress speaks TLS (https://)")
	fl.StringVar(&p.l5, "ingress-l5", "", "preview URL: the host name the ingress routes by, when it differs from --ingress-host (default: --ingress-host)")
}

var ingressFlags = []string{"ingress-host", "ingress-port", "ingress-tls", "ingress-l5"}

func anyChanged(changed func(string) bool, names ...string) bool {
	for _, n := range names {
		if changed(n) {
			return true
		}
	}
	return false
}

// ingress is where a preview link points.
type ingress struct {
	Host string
	Port int
	TLS  bool
	L5   string
}

// httpSettings builds an http intercept's settings from its flags (the
// --http-* values) and the Service port: --http-match auto (or none) makes
// a header no one else has, x-detour-intercept-id: <random>:<name> (or
// another, --http-auto-header); the path and method flags add their rules.
func httpSettings(args map[string][]string, name string, sp corev1.ServicePort, strategy string, preview bool, random io.Reader) (tunnel.HTTPSettings, error) {
	var s tunnel.HTTPSettings
	matches := args["match"]
	auto := len(matches) == 0
	for _, m := range matches {
		if m == "auto" {
			auto = true
			continue
		}
		hm, err := tunnel.ParseHeaderMatch(m)
		if err != nil {
			return s, fmt.Errorf("--http-match %q: want NAME=VALUE (e.g. --http-match x-dev=alice), baggage:KEY=VALUE or auto", m)
		}
		s.Match = append(s.Match, hm)
	}
	if auto && len(s.Match) > 0 {
		return s, fmt.Errorf("--http-match auto cannot be combined with NAME=VALUE rules: give either")
	}
	if auto {
		id, err := randomHex(random, 4)
		if err != nil {
			return s, err
		}
		m, err := autoMatch(args[flagAutoHeader], id+":"+name)
		if err != nil {
			return s, err
		}
		s.Match = []tunnel.HeaderMatch{m}
	} else if len(args[flagAutoHeader]) > 0 {
		return s, fmt.Errorf("--http-auto-header shapes the rule --http-match auto makes: give --http-match auto, or put the header in --http-match NAME=VALUE")
	}
	if err := requestLineSettings(args, &s); err != nil {
		return s, err
	}
	if len(s.Match) > tunnel.MaxHeaderMatches {
		return s, fmt.Errorf("--http-match given %d times: at most %d", len(s.Match), tunnel.MaxHeaderMatches)
	}
	if v := args["plaintext"]; len(v) == 1 && v[0] == "true" {
		s.Plaintext = true
	}
	if sp.AppProtocol != nil {
		s.AppProtocol = *sp.AppProtocol
	}
	s.Strategy = strategy
	if preview {
		tok, err := randomHex(random, 16)
		if err != nil {
			return s, err
		}
		s.PreviewToken = tok
	}
	return s, nil
}

func randomHex(r io.Reader, n int) (string, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", fmt.Errorf("generate a random id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// headerLine renders rules as curl -H arguments take them.
func headerLine(rules []string) string {
	parts := make([]string, len(rules))
	for i, r := range rules {
		name, value := ruleHeader(r)
		parts[i] = name + ": " + value
	}
	return strings.Join(parts, ", ")
}

func curlHint(rules []string) string {
	var b strings.Builder
	b.WriteString("curl")
	for _, r := range rules {
		name, value := ruleHeader(r)
		fmt.Fprintf(&b, " -H '%s: %s'", name, value)
	}
	return b.String()
}

// previewURL is the shareable link: the ingress's address (its L5 host
// name when given: that is the name it routes by) with the token the agent
// turns into a cookie.
func previewURL(ing ingress, token string) string {
	scheme := "http"
	if ing.TLS {
		scheme = "https"
	}
	host := ing.Host
	if ing.L5 != "" {
		host = ing.L5
	}
	if !(ing.TLS && ing.Port == 443 || !ing.TLS && ing.Port == 80) {
		host = net.JoinHostPort(host, strconv.Itoa(ing.Port))
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	u := url.URL{Scheme: scheme, Host: host, Path: "/", RawQuery: url.Values{tunnel.PreviewQuery: {token}}.Encode()}
	return u.String()
}

// resolveIngress decides where the preview link points. Flags win; when
// any is given the required ones must be too. Without flags, an interactive
// session is asked, defaults (found from the cluster) accepted with Enter;
// a non-interactive one is an error that says what to pass.
func resolveIngress(p previewFlags, changed func(string) bool, def ingress, interactive bool, in io.Reader, out io.Writer) (ingress, error) {
	if anyChanged(changed, ingressFlags...) {
		var missing []string
		if !changed("ingress-host") || p.host == "" {
			missing = append(missing, "--ingress-host")
		}
		if !changed("ingress-port") {
			missing = append(missing, "--ingress-port")
		}
		if len(missing) > 0 {
			return ingress{}, fmt.Errorf("preview URL: %s missing: --ingress-host and --ingress-port are required when any --ingress-* flag is given", strings.Join(missing, " and "))
		}
		if p.port < 1 || p.port > 65535 {
			return ingress{}, fmt.Errorf("--ingress-port %d is not a port (1..65535)", p.port)
		}
		return ingress{Host: p.host, Port: p.port, TLS: p.tls, L5: p.l5}, nil
	}
	if !interactive {
		return ingress{}, fmt.Errorf("preview URL: say where the cluster's ingress is with --ingress-host and --ingress-port (and --ingress-tls, --ingress-l5 when needed), run in a terminal to be asked, or pass --preview-url=false")
	}
	r := bufio.NewReader(in)
	ask := func(q, def string) (string, error) {
		fmt.Fprintf(out, "%s [%s]: ", q, def)
		line, err := r.ReadString('\n')
		if err != nil && line == "" {
			return "", fmt.Errorf("preview URL: no answer to %q: %w", q, err)
		}
		if line = strings.TrimSpace(line); line == "" {
			return def, nil
		}
		return line, nil
	}
	fmt.Fprintln(out, "The preview URL is built from the cluster's ingress; press Enter to accept a default.")
	var ing ingress
	var err error
	if ing.Host, err = ask("1/4 Ingress host (address the ingress is reached at)", def.Host); err != nil {
		return ing, err
	}
	for {
		s, err := ask("2/4 Ingress port", strconv.Itoa(def.Port))
		if err != nil {
			return ing, err
		}
		if ing.Port, err = strconv.Atoi(s); err == nil && ing.Port > 0 && ing.Port < 65536 {
			break
		}
		fmt.Fprintf(out, "%q is not a port (1..65535)\n", s)
	}
	for {
		tlsDefault := "n"
		if def.TLS || ing.Port == 443 {
			tlsDefault = "y"
		}
		s, err := ask("3/4 Does the ingress speak TLS (y/n)", tlsDefault)
		if err != nil {
			return ing, err
		}
		if yes, ok := parseYesNo(s); ok {
			ing.TLS = yes
			break
		}
		fmt.Fprintln(out, "answer y or n")
	}
	l5Default := def.L5
	if l5Default == "" {
		l5Default = ing.Host
	}
	if ing.L5, err = ask("4/4 Ingress L5 host (the name it routes by)", l5Default); err != nil {
		return ing, err
	}
	if ing.L5 == ing.Host {
		ing.L5 = ""
	}
	return ing, nil
}

func parseYesNo(s string) (yes bool, ok bool) {
	switch strings.ToLower(s) {
	case "y", "yes", "true":
		return true, true
	case "n", "no", "false":
		return false, true
	}
	return false, false
}

// detectIngress proposes the dialogue's defaults: an Ingress routing to the
// Service (its host, 443 with TLS when it has a TLS section), else the
// Service's own DNS name and port.
func detectIngress(ctx context.Context, cs kubernetes.Interface, ns string, svc *corev1.Service, sp corev1.ServicePort) ingress {
	def := ingress{Host: svc.Name + "." + ns, Port: int(sp.Port), TLS: sp.Port == 443}
	list, err := cs.NetworkingV1().Ingresses(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return def // no permission to list Ingresses, or none: the Service's name is the best guess
	}
	for _, ing := range list.Items {
		for _, rule := range ing.Spec.Rules {
			if rule.HTTP == nil || rule.Host == "" {
				continue
			}
			for _, path := range rule.HTTP.Paths {
				if path.Backend.Service == nil || path.Backend.Service.Name != svc.Name {
					continue
				}
				found := ingress{Host: rule.Host, Port: 80}
				for _, t := range ing.Spec.TLS {
					for _, h := range t.Hosts {
						if h == rule.Host {
							found.Port, found.TLS = 443, true
						}
					}
				}
				return found
			}
		}
	}
	return def
}

// checkTLSSecrets fails early when the workload's TLS annotations name a
// Secret that does not exist: its pods could never start (the Secret is
// mounted into the agent), and the rollout would only time out.
func checkTLSSecrets(ctx context.Context, cs kubernetes.Interface, w resolve.Workload) error {
	for _, key := range []string{annotations.TerminatingTLSSecret, annotations.OriginatingTLSSecret} {
		name := w.Template.Annotations[key]
		if name == "" {
			continue
		}
		_, err := cs.CoreV1().Secrets(w.Namespace).Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil:
		case apierrors.IsNotFound(err):
			return fmt.Errorf("%s names %s=%s, but there is no Secret %q in namespace %s: create it (kubectl create secret tls %s --cert=… --key=… -n %s) or remove the annotation",
				w.Ref(), key, name, name, w.Namespace, name, w.Namespace)
		case apierrors.IsForbidden(err):
			// Users may intercept without reading Secrets; the kubelet will tell.
		default:
			return fmt.Errorf("check Secret %s/%s named by %s: %w", w.Namespace, name, key, err)
		}
	}
	return nil
}

// interactive says whether the dialogue can ask: stdin is a terminal.
func (a *app) interactive() bool {
	f, ok := a.in.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
