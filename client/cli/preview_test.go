package cli

import (
	"errors"
	"strings"
	"testing"
)

func TestDecidePreview(t *testing.T) {
	cases := []struct {
		name      string
		configDef bool
		set       map[string]string // flags given on the command line
		want      bool
		err       string
	}{
		{"nothing: the config decides (off)", false, nil, false, ""},
		{"nothing: the config decides (on)", true, nil, true, ""},
		{"--preview-url", false, map[string]string{"preview-url": "true"}, true, ""},
		{"--preview-url=false beats the config", true, map[string]string{"preview-url": "false"}, false, ""},
		{"--ingress-host alone turns it on", false, map[string]string{"ingress-host": "1.2.3.4"}, true, ""},
		{"--ingress-port alone turns it on", false, map[string]string{"ingress-port": "443"}, true, ""},
		{"--ingress-tls alone turns it on", false, map[string]string{"ingress-tls": "true"}, true, ""},
		{"--ingress-l5 alone turns it on", false, map[string]string{"ingress-l5": "shop.example.com"}, true, ""},
		{"--ingress-* with --preview-url", false, map[string]string{"ingress-host": "h", "ingress-port": "80", "preview-url": "true"}, true, ""},
		{"--ingress-* with --preview-url=false contradicts", true, map[string]string{"ingress-host": "h", "ingress-tls": "true", "preview-url": "false"}, false,
			"--ingress-host, --ingress-tls describe(s) the preview URL, but --preview-url=false turns it off"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := previewFlags{enabled: c.set["preview-url"] == "true"}
			changed := func(n string) bool { _, ok := c.set[n]; return ok }
			got, err := decidePreview(c.configDef, p, changed)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) || !errors.Is(err, ErrUsage) {
					t.Fatalf("err = %v, want a usage error containing %q", err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("decidePreview = %v, %v; want %v", got, err, c.want)
			}
		})
	}
}
