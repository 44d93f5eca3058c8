package tunnel

import (
	"fmt"
	"net/textproto"
	"regexp"
	"slices"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// Keys of CreateIntercept.Args for the http mechanism. They are the CLI's
// flag names without the "http-" prefix, so an extension that declares the
// same flags produces the same request.
const (
	ArgMatch               = "match"                 // NAME=VALUE, repeatable, all must match
	ArgPreviewToken        = "preview-token"         // a browser that presents it is routed like a header match
	ArgAppProtocol         = "app-protocol"          // the Service port's appProtocol, when set
	ArgAppProtocolStrategy = "app-protocol-strategy" // how to find the app's protocol without one
	ArgPlaintext           = "plaintext"             // "true": plain HTTP to the local process even when the app speaks TLS
	ArgPathEqual           = "path-equal"            // the request's path is exactly this
	ArgPathPrefix          = "path-prefix"           // the request's path starts with this
	ArgPathRegex           = "path-regex"            // the whole request path matches this RE2 expression
	ArgMethod              = "method"                // repeatable: the request's method is one of these
)

// AutoMatchHeader is the header --http-match=auto generates.
const AutoMatchHeader = "x-detour-intercept-id"

// Baggage rules: --http-match baggage:KEY=VALUE matches one member of the
// W3C baggage header (https://www.w3.org/TR/baggage/), which instrumented
// apps propagate from service to service. AutoBaggageKey is the member
// --http-match auto --http-auto-header baggage generates.
const (
	BaggageHeader  = "baggage"
	BaggagePrefix  = BaggageHeader + ":"
	AutoBaggageKey = "detour-intercept-id"
)

// PreviewCookie and PreviewQuery carry a preview token from a browser.
const (
	PreviewCookie = "detour-preview"
	PreviewQuery  = "detour-preview"
)

// App protocol strategies, for a port whose Service gives no appProtocol.
const (
	StrategyHTTP2Probe = "http2Probe" // ask with HTTP/2 prior knowledge, fall back to HTTP/1.1
	StrategyHTTP       = "http"       // HTTP/1.1, no probe
	StrategyHTTP2      = "http2"      // HTTP/2 prior knowledge (h2c), no probe
)

// Limits on one http intercept's settings.
const (
	MaxHeaderMatches = 16
	MaxMethods       = 16
	MaxPathRule      = 1024 // bytes of a path-equal, path-prefix or path-regex value
	maxPreviewToken  = 128
)

// HeaderMatch is one NAME=VALUE rule: the request must carry header Name
// (compared case-insensitively; stored lower-case) with exactly Value.
// With Member set it is a baggage rule, baggage:MEMBER=VALUE: the baggage
// header (Name) must hold a list member whose key is exactly Member and
// whose value, percent-decoded, is exactly Value.
type HeaderMatch struct {
	Name   string `json:"name"`
	Member string `json:"member,omitempty"`
	Value  string `json:"value"`
	// Canonical is Name as net/http keys its header maps, set by
	// ParseHeaderMatch, so matching needs no work per request.
	Canonical string `json:"-"`
}

func (m HeaderMatch) String() string {
	if m.Member != "" {
		return BaggagePrefix + m.Member + "=" + m.Value
	}
	return m.Name + "=" + m.Value
}

// PathMatch is an http intercept's path rule: Kind is ArgPathEqual,
// ArgPathPrefix or ArgPathRegex ("" takes any path), compared with the
// request's percent-decoded path (net/http's URL.Path, without the query).
// A prefix is a plain string prefix (/api takes /api, /api/x and /apis);
// a regex must match the whole path (it is anchored as ^(?:VALUE)$).
type PathMatch struct {
	Kind  string `json:"kind,omitempty"`
	Value string `json:"value,omitempty"`
	// Regexp is Value compiled (path-regex only), set by ParsePathMatch
	// so that a request costs no compilation.
	Regexp *regexp.Regexp `json:"-"`
}

// Matches reports whether path satisfies the rule.
func (p *PathMatch) Matches(path string) bool {
	switch p.Kind {
	case "":
		return true
	case ArgPathEqual:
		return path == p.Value
	case ArgPathPrefix:
		return strings.HasPrefix(path, p.Value)
	default:
		return p.Regexp != nil && p.Regexp.MatchString(path)
	}
}

// String is the rule as its Args entry: KIND=VALUE, "" for any path.
func (p PathMatch) String() string {
	if p.Kind == "" {
		return ""
	}
	return p.Kind + "=" + p.Value
}

// HTTPSettings are an http intercept's settings, parsed from its Args. A
// request is routed to the intercept when it carries every header rule
// (Match), its method is one of Methods (any when empty), and its path
// satisfies Path.
type HTTPSettings struct {
	Match        []HeaderMatch
	Methods      []string // upper-case
	Path         PathMatch
	PreviewToken string
	AppProtocol  string
	Strategy     string
	Plaintext    bool
}

// ParseHeaderMatch parses a NAME=VALUE rule, or a baggage:KEY=VALUE one,
// as the CLI and the agent read it.
func ParseHeaderMatch(s string) (HeaderMatch, error) {
	if len(s) > len(BaggagePrefix) && strings.EqualFold(s[:len(BaggagePrefix)], BaggagePrefix) {
		return parseBaggageMatch(s)
	}
	name, value, ok := strings.Cut(s, "=")
	name = strings.TrimSpace(name)
	switch {
	case !ok:
		return HeaderMatch{}, fmt.Errorf("header match %q: want NAME=VALUE, e.g. x-dev=alice: %w", s, ErrBadRequest)
	case name == "" || !httpguts.ValidHeaderFieldName(name):
		return HeaderMatch{}, fmt.Errorf("header match %q: %q is not a header name (letters, digits and !#$%%&'*+-.^_`|~): %w", s, name, ErrBadRequest)
	case value == "" || !httpguts.ValidHeaderFieldValue(value):
		return HeaderMatch{}, fmt.Errorf("header match %q: the value must be non-empty and printable: %w", s, ErrBadRequest)
	}
	return HeaderMatch{Name: strings.ToLower(name), Value: value, Canonical: textproto.CanonicalMIMEHeaderKey(name)}, nil
}

// parseBaggageMatch reads baggage:KEY=VALUE. KEY is a token, as the W3C
// baggage spec has it, compared exactly; VALUE is the member's value as
// the app sets it (the agent percent-decodes the header's before
// comparing), so it may hold any printable character.
func parseBaggageMatch(s string) (HeaderMatch, error) {
	key, value, ok := strings.Cut(s[len(BaggagePrefix):], "=")
	key = strings.TrimSpace(key)
	switch {
	case !ok:
		return HeaderMatch{}, fmt.Errorf("baggage match %q: want baggage:KEY=VALUE, e.g. baggage:dev=alice: %w", s, ErrBadRequest)
	case key == "" || !httpguts.ValidHeaderFieldName(key):
		return HeaderMatch{}, fmt.Errorf("baggage match %q: %q is not a baggage key (letters, digits and !#$%%&'*+-.^_`|~): %w", s, key, ErrBadRequest)
	case value == "" || !httpguts.ValidHeaderFieldValue(value):
		return HeaderMatch{}, fmt.Errorf("baggage match %q: the value must be non-empty and printable: %w", s, ErrBadRequest)
	}
	return HeaderMatch{Name: BaggageHeader, Member: key, Value: value, Canonical: textproto.CanonicalMIMEHeaderKey(BaggageHeader)}, nil
}

// ParsePathMatch reads a path rule: kind is ArgPathEqual, ArgPathPrefix or
// ArgPathRegex. Equal and prefix values start with '/'; a regex is RE2
// syntax (Go's regexp: linear time, no backreferences), compiled once here.
func ParsePathMatch(kind, value string) (PathMatch, error) {
	if len(value) == 0 || len(value) > MaxPathRule {
		return PathMatch{}, fmt.Errorf("%s: want 1..%d bytes: %w", kind, MaxPathRule, ErrBadRequest)
	}
	for _, c := range []byte(value) {
		if c < 0x20 || c == 0x7f {
			return PathMatch{}, fmt.Errorf("%s %q: control characters are not allowed: %w", kind, value, ErrBadRequest)
		}
	}
	switch kind {
	case ArgPathEqual, ArgPathPrefix:
		if value[0] != '/' {
			return PathMatch{}, fmt.Errorf("%s %q: a path starts with '/': %w", kind, value, ErrBadRequest)
		}
		return PathMatch{Kind: kind, Value: value}, nil
	case ArgPathRegex:
		// Compiled alone first: only a balanced expression may be wrapped,
		// or "/a)|(.*" would close the anchoring group and take any path.
		if _, err := regexp.Compile(value); err != nil {
			return PathMatch{}, fmt.Errorf("%s %q is not an RE2 regular expression: %v: %w", kind, value, err, ErrBadRequest)
		}
		re, err := regexp.Compile(`^(?:` + value + `)$`)
		if err != nil {
			return PathMatch{}, fmt.Errorf("%s %q is not an RE2 regular expression: %v: %w", kind, value, err, ErrBadRequest)
		}
		return PathMatch{Kind: kind, Value: value, Regexp: re}, nil
	}
	return PathMatch{}, fmt.Errorf("path rule %q: want %s, %s or %s: %w", kind, ArgPathEqual, ArgPathPrefix, ArgPathRegex, ErrBadRequest)
}

// ParseMethods reads method rules: HTTP method tokens, upper-cased (the
// standard methods are upper-case, and no app tells GET from get),
// repeats dropped.
func ParseMethods(values []string) ([]string, error) {
	if len(values) > MaxMethods {
		return nil, fmt.Errorf("%d methods: at most %d: %w", len(values), MaxMethods, ErrBadRequest)
	}
	var out []string
	for _, v := range values {
		m := strings.ToUpper(strings.TrimSpace(v))
		if m == "" || !httpguts.ValidHeaderFieldName(m) { // a method is a token, as a header name is
			return nil, fmt.Errorf("method %q is not an HTTP method (e.g. GET, POST): %w", v, ErrBadRequest)
		}
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out, nil
}

// ParseHTTPArgs reads the http mechanism's Args; unknown keys are refused
// so a typo never silently widens an intercept.
func ParseHTTPArgs(args map[string][]string) (HTTPSettings, error) {
	s, err := parseHTTPArgs(args)
	if err != nil {
		return s, err
	}
	if len(s.Match) == 0 {
		return s, fmt.Errorf("an http intercept needs at least one header match (--http-match NAME=VALUE or auto): %w", ErrBadRequest)
	}
	return s, nil
}

// ParseHTTPMirrorArgs reads the http-mirror mechanism's Args: the http
// mechanism's, where every rule is optional (no rule copies every
// request) and a preview token has no place (a mirror routes nothing).
func ParseHTTPMirrorArgs(args map[string][]string) (HTTPSettings, error) {
	s, err := parseHTTPArgs(args)
	if err != nil {
		return s, err
	}
	if s.PreviewToken != "" {
		return s, fmt.Errorf("an http-mirror takes copies and routes nothing: it has no preview token: %w", ErrBadRequest)
	}
	return s, nil
}

func parseHTTPArgs(args map[string][]string) (HTTPSettings, error) {
	var s HTTPSettings
	for key, values := range args {
		switch key {
		case ArgMatch:
			if len(values) > MaxHeaderMatches {
				return s, fmt.Errorf("%d header matches: at most %d: %w", len(values), MaxHeaderMatches, ErrBadRequest)
			}
			for _, v := range values {
				m, err := ParseHeaderMatch(v)
				if err != nil {
					return s, err
				}
				s.Match = append(s.Match, m)
			}
		case ArgPreviewToken:
			if len(values) != 1 || len(values[0]) < 16 || len(values[0]) > maxPreviewToken || !isTokenChars(values[0]) {
				return s, fmt.Errorf("preview token: want one value of 16..%d letters, digits, '-' or '_': %w", maxPreviewToken, ErrBadRequest)
			}
			s.PreviewToken = values[0]
		case ArgAppProtocol:
			if len(values) != 1 {
				return s, fmt.Errorf("app protocol: want one value: %w", ErrBadRequest)
			}
			s.AppProtocol = values[0]
		case ArgAppProtocolStrategy:
			if len(values) != 1 {
				return s, fmt.Errorf("app protocol strategy: want one value: %w", ErrBadRequest)
			}
			switch values[0] {
			case StrategyHTTP2Probe, StrategyHTTP, StrategyHTTP2:
			default:
				return s, fmt.Errorf("app protocol strategy %q: want %s, %s or %s: %w", values[0], StrategyHTTP2Probe, StrategyHTTP, StrategyHTTP2, ErrBadRequest)
			}
			s.Strategy = values[0]
		case ArgPlaintext:
			if len(values) != 1 || (values[0] != "true" && values[0] != "false") {
				return s, fmt.Errorf("plaintext: want true or false: %w", ErrBadRequest)
			}
			s.Plaintext = values[0] == "true"
		case ArgPathEqual, ArgPathPrefix, ArgPathRegex:
			if len(values) != 1 || s.Path.Kind != "" {
				return s, fmt.Errorf("%s, %s and %s: give one path rule, once: %w", ArgPathEqual, ArgPathPrefix, ArgPathRegex, ErrBadRequest)
			}
			p, err := ParsePathMatch(key, values[0])
			if err != nil {
				return s, err
			}
			s.Path = p
		case ArgMethod:
			m, err := ParseMethods(values)
			if err != nil {
				return s, err
			}
			s.Methods = m
		default:
			return s, fmt.Errorf("http mechanism has no setting %q (it takes %s): %w",
				key, strings.Join([]string{ArgMatch, ArgMethod, ArgPathEqual, ArgPathPrefix, ArgPathRegex, ArgPreviewToken, ArgAppProtocol, ArgAppProtocolStrategy, ArgPlaintext}, ", "), ErrBadRequest)
		}
	}
	if s.Strategy == "" {
		s.Strategy = StrategyHTTP2Probe
	}
	return s, nil
}

// Args turns settings back into CreateIntercept.Args.
func (s HTTPSettings) Args() map[string][]string {
	args := map[string][]string{}
	for _, m := range s.Match {
		args[ArgMatch] = append(args[ArgMatch], m.String())
	}
	if len(s.Methods) > 0 {
		args[ArgMethod] = slices.Clone(s.Methods)
	}
	if s.Path.Kind != "" {
		args[s.Path.Kind] = []string{s.Path.Value}
	}
	if s.PreviewToken != "" {
		args[ArgPreviewToken] = []string{s.PreviewToken}
	}
	if s.AppProtocol != "" {
		args[ArgAppProtocol] = []string{s.AppProtocol}
	}
	if s.Strategy != "" {
		args[ArgAppProtocolStrategy] = []string{s.Strategy}
	}
	if s.Plaintext {
		args[ArgPlaintext] = []string{"true"}
	}
	return args
}

func isTokenChars(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}
