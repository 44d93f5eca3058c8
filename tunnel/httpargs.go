package tunnel

import (
	"fmt"
	"net/textproto"
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
)

// AutoMatchHeader is the header --http-match=auto generates.
const AutoMatchHeader = "x-detour-intercept-id"

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
	maxPreviewToken  = 128
)

// HeaderMatch is one NAME=VALUE rule: the request must carry header Name
// (compared case-insensitively; stored lower-case) with exactly Value.
type HeaderMatch struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	// Canonical is Name as net/http keys its header maps, set by
	// ParseHeaderMatch, so matching needs no work per request.
	Canonical string `json:"-"`
}

func (m HeaderMatch) String() string { return m.Name + "=" + m.Value }

// HTTPSettings are an http intercept's settings, parsed from its Args.
type HTTPSettings struct {
	Match        []HeaderMatch
	PreviewToken string
	AppProtocol  string
	Strategy     string
	Plaintext    bool
}

// ParseHeaderMatch parses a NAME=VALUE rule as the CLI and the agent read it.
func ParseHeaderMatch(s string) (HeaderMatch, error) {
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

// ParseHTTPArgs reads the http mechanism's Args; unknown keys are refused
// so a typo never silently widens an intercept.
func ParseHTTPArgs(args map[string][]string) (HTTPSettings, error) {
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
		default:
			return s, fmt.Errorf("http mechanism has no setting %q (it takes %s, %s, %s, %s, %s): %w",
				key, ArgMatch, ArgPreviewToken, ArgAppProtocol, ArgAppProtocolStrategy, ArgPlaintext, ErrBadRequest)
		}
	}
	if len(s.Match) == 0 {
		return s, fmt.Errorf("an http intercept needs at least one header match (--http-match NAME=VALUE or auto): %w", ErrBadRequest)
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
