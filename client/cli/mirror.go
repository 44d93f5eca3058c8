package cli

import (
	"fmt"
	"strings"

	"github.com/detour-dev/detour/tunnel"
)

// mirrorUsage is --mirror's help: a mirror is the intercept's mechanism
// (tcp: connections, http: requests) turned into copying.
const mirrorUsage = "take copies, not the traffic: the app keeps answering and your local process gets a copy of every connection (tcp) or of every request --http-* rules match (http), its answers thrown away; copies your workstation is too slow for are dropped whole and counted (detour status)"

// mirrorOf is the mirror mechanism of mechanism, for --mirror: tcp-mirror
// copies connections, http-mirror requests. A preview URL routes a
// browser, which a mirror never does.
func mirrorOf(mechanism string, p previewFlags, changed func(string) bool) (string, error) {
	if changed("preview-url") && p.enabled || anyChanged(changed, ingressFlags...) {
		return "", usagef("--mirror takes copies and routes no request to you: a preview URL would have nothing to route; drop --preview-url and --ingress-*")
	}
	switch mechanism {
	case tunnel.MechanismTCP:
		return tunnel.MechanismTCPMirror, nil
	case tunnel.MechanismHTTP:
		return tunnel.MechanismHTTPMirror, nil
	}
	return "", usagef("--mirror copies connections (--mechanism tcp) or requests (--mechanism http, or any --http-* rule): mechanism %q has no mirror", mechanism)
}

// mirrorHTTPSettings are an http-mirror's settings from the --http-*
// flags: the same rules as an http intercept's, all optional (none copies
// every request); auto and --http-auto-header make a header for requests
// to be routed by, which a mirror has no use for.
func mirrorHTTPSettings(args map[string][]string, strategy string) (tunnel.HTTPSettings, error) {
	var s tunnel.HTTPSettings
	for _, m := range args["match"] {
		if m == "auto" {
			return s, fmt.Errorf("--http-match auto makes a header of your own for requests to be sent with; a mirror copies the requests others send: give NAME=VALUE rules to copy only those, or none to copy every request")
		}
		hm, err := tunnel.ParseHeaderMatch(m)
		if err != nil {
			return s, fmt.Errorf("--http-match %q: want NAME=VALUE (e.g. --http-match x-dev=alice) or baggage:KEY=VALUE", m)
		}
		s.Match = append(s.Match, hm)
	}
	if len(args[flagAutoHeader]) > 0 {
		return s, fmt.Errorf("--http-auto-header shapes the rule --http-match auto makes, which a mirror does not use")
	}
	if len(s.Match) > tunnel.MaxHeaderMatches {
		return s, fmt.Errorf("--http-match given %d times: at most %d", len(s.Match), tunnel.MaxHeaderMatches)
	}
	if err := requestLineSettings(args, &s); err != nil {
		return s, err
	}
	if v := args["plaintext"]; len(v) == 1 && v[0] == "true" {
		s.Plaintext = true
	}
	s.Strategy = strategy
	return s, nil
}

// takesOf says what an intercept takes (or a mirror copies), for the
// summary, status and list.
func takesOf(mechanism string, httpMatch []string, args map[string][]string) string {
	switch mechanism {
	case tunnel.MechanismTCPMirror:
		return "a copy of every connection"
	case tunnel.MechanismHTTPMirror:
		var parts []string
		if len(httpMatch) > 0 {
			parts = append(parts, "with "+headerLine(httpMatch))
		}
		if r := requestLineRules(args); r != "" {
			parts = append(parts, r)
		}
		if len(parts) == 0 {
			return "a copy of every request"
		}
		return "a copy of requests " + strings.Join(parts, "; ")
	}
	if len(httpMatch) > 0 {
		return httpTakes(httpMatch, args)
	}
	return "every connection"
}

// mirrorCounts is a mirror's line in status.
func mirrorCounts(copied, dropped uint64) string {
	return fmt.Sprintf("copies: %d sent, %d dropped", copied, dropped)
}
