package cli

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/detour-dev/detour/client/internal/daemon"
	"github.com/detour-dev/detour/tunnel"
)

// The http mechanism's request-line flags, and --http-auto-header: with
// the header rules (--http-match) they decide which requests an http
// intercept takes. All must match.
const (
	flagAutoHeader = "auto-header" // not sent: it shapes the rule --http-match auto makes
)

// withHTTPMatchFlags adds the path, method and auto-header flags to the
// built-in http mechanism's flags.
func withHTTPMatchFlags(flags map[string]FlagSpec) map[string]FlagSpec {
	flags[tunnel.ArgPathEqual] = FlagSpec{Type: "string", Usage: "PATH: take only the requests whose path is exactly PATH (with the header rules: all must match)"}
	flags[tunnel.ArgPathPrefix] = FlagSpec{Type: "string", Usage: "PREFIX: take only the requests whose path starts with PREFIX, as a plain string (/api takes /api, /api/x and /apis; write /api/ for the directory)"}
	flags[tunnel.ArgPathRegex] = FlagSpec{Type: "string", Usage: "REGEX: take only the requests whose whole path matches REGEX (RE2 syntax, anchored at both ends: /v[0-9]+/items/.*)"}
	flags[tunnel.ArgMethod] = FlagSpec{Type: "stringArray", Usage: "METHOD: take only the requests with this method (repeatable or comma-separated: any of them), e.g. POST"}
	flags[flagAutoHeader] = FlagSpec{Type: "string", Usage: "what --http-match auto generates: a header NAME (default x-detour-intercept-id), or baggage (a member detour-intercept-id of the W3C baggage header, which traced apps pass on), or baggage:KEY"}
	return flags
}

// requestLineSettings reads the path and method flags into s. The paths
// and methods are checked as the agent checks them, before the cluster is
// asked anything.
func requestLineSettings(args map[string][]string, s *tunnel.HTTPSettings) error {
	var methods []string
	for _, v := range args[tunnel.ArgMethod] {
		methods = append(methods, strings.Split(v, ",")...)
	}
	if len(methods) > 0 {
		m, err := tunnel.ParseMethods(methods)
		if err != nil {
			return fmt.Errorf("--http-method: %s", trimBadRequest(err))
		}
		s.Methods = m
	}
	var given []string
	for _, kind := range []string{tunnel.ArgPathEqual, tunnel.ArgPathPrefix, tunnel.ArgPathRegex} {
		if v, ok := args[kind]; ok {
			given = append(given, "--http-"+kind)
			p, err := tunnel.ParsePathMatch(kind, v[0])
			if err != nil {
				return fmt.Errorf("--http-%s", trimBadRequest(err))
			}
			s.Path = p
		}
	}
	if len(given) > 1 {
		return fmt.Errorf("%s: give one path rule (a request has one path); --http-path-regex can say /a/.*|/b/.*", strings.Join(given, " and "))
	}
	return nil
}

func trimBadRequest(err error) string {
	return strings.TrimSuffix(err.Error(), ": "+tunnel.ErrBadRequest.Error())
}

// autoMatch is the rule --http-match auto makes with value, as
// --http-auto-header (given: the flag's values) shapes it.
func autoMatch(given []string, value string) (tunnel.HeaderMatch, error) {
	header := tunnel.AutoMatchHeader
	if len(given) > 0 {
		header = strings.TrimSpace(given[0])
	}
	rule := header + "=" + value // NAME=VALUE, or baggage:KEY=VALUE
	if strings.EqualFold(header, tunnel.BaggageHeader) {
		rule = tunnel.BaggagePrefix + tunnel.AutoBaggageKey + "=" + value
	}
	m, err := tunnel.ParseHeaderMatch(rule)
	if err != nil {
		return m, fmt.Errorf("--http-auto-header %q: want a header name (e.g. x-dev), baggage, or baggage:KEY", header)
	}
	return m, nil
}

// ruleHeader is the header a request must carry for one NAME=VALUE or
// baggage:KEY=VALUE rule: its name and value as curl -H takes them (a
// baggage value percent-encoded where the W3C syntax needs it).
func ruleHeader(rule string) (name, value string) {
	if len(rule) > len(tunnel.BaggagePrefix) && strings.EqualFold(rule[:len(tunnel.BaggagePrefix)], tunnel.BaggagePrefix) {
		key, v, _ := strings.Cut(rule[len(tunnel.BaggagePrefix):], "=")
		return tunnel.BaggageHeader, key + "=" + baggageEscape(v)
	}
	name, value, _ = strings.Cut(rule, "=")
	return name, value
}

// baggageEscape percent-encodes what a W3C baggage value may not hold
// literally: controls, space, '"', ',', ';', '\\', '%' and non-ASCII.
func baggageEscape(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c <= 0x20 || c >= 0x7f || strings.IndexByte("\",;\\%", c) >= 0 {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// requestLineRules describes an http intercept's method and path rules
// ("" when it has none), as status, list and the summary show them.
func requestLineRules(args map[string][]string) string {
	var parts []string
	if m := args[tunnel.ArgMethod]; len(m) > 0 {
		parts = append(parts, "method "+strings.Join(m, "|"))
	}
	for _, kind := range []struct{ arg, label string }{
		{tunnel.ArgPathEqual, "path"}, {tunnel.ArgPathPrefix, "path prefix"}, {tunnel.ArgPathRegex, "path regex"},
	} {
		if v := args[kind.arg]; len(v) > 0 {
			parts = append(parts, kind.label+" "+v[0])
		}
	}
	return strings.Join(parts, ", ")
}

// httpTakes is what an http intercept takes, for status and list.
func httpTakes(match []string, args map[string][]string) string {
	s := "requests with " + headerLine(match)
	if r := requestLineRules(args); r != "" {
		s += "; " + r
	}
	return s
}

// tryHint is a curl command line one of the intercept's requests would
// be sent with: its headers, a method it takes, a path it takes.
func tryHint(st daemon.InterceptStatus) string {
	var b strings.Builder
	b.WriteString(curlHint(st.HTTPMatch))
	if m := st.First().MechanismArgs[tunnel.ArgMethod]; len(m) > 0 && !slices.Contains(m, "GET") {
		if m[0] == "HEAD" {
			b.WriteString(" --head")
		} else {
			fmt.Fprintf(&b, " -X %s", m[0])
		}
	}
	path, note := "/", ""
	if v := st.First().MechanismArgs[tunnel.ArgPathEqual]; len(v) > 0 {
		path = v[0]
	} else if v := st.First().MechanismArgs[tunnel.ArgPathPrefix]; len(v) > 0 {
		path = v[0]
	} else if v := st.First().MechanismArgs[tunnel.ArgPathRegex]; len(v) > 0 {
		if re, err := regexp.Compile(v[0]); err == nil {
			if lit, _ := re.LiteralPrefix(); strings.HasPrefix(lit, "/") {
				path = lit
			}
		}
		note = "   # with a path matching " + v[0]
	}
	u := url.URL{Scheme: "http", Host: fmt.Sprintf("%s.%s:%d", st.Service, st.Namespace, st.First().Port), Path: path}
	fmt.Fprintf(&b, " '%s'%s", u.String(), note)
	return b.String()
}
