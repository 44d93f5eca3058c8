package cli

import "strings"

// decidePreview says whether an http intercept gets a preview URL:
// --preview-url when given; else yes when any --ingress-* flag is given
// (they only describe the preview's address, so giving one asks for it);
// else the config's intercept.previewURL. --preview-url=false with an
// --ingress-* flag contradicts itself.
func decidePreview(configDefault bool, p previewFlags, changed func(string) bool) (bool, error) {
	var given []string
	for _, n := range ingressFlags {
		if changed(n) {
			given = append(given, "--"+n)
		}
	}
	switch {
	case changed("preview-url") && !p.enabled && len(given) > 0:
		return false, usagef("%s describe(s) the preview URL, but --preview-url=false turns it off: drop one or the other", strings.Join(given, ", "))
	case changed("preview-url"):
		return p.enabled, nil
	case len(given) > 0:
		return true, nil
	}
	return configDefault, nil
}
