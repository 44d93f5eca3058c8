package client

import (
	"testing"

	"github.com/detour-dev/detour/tunnel"
)

func TestPrintableLabel(t *testing.T) {
	for in, want := range map[string]string{
		"alice@laptop":           "alice@laptop",
		"zoë@hôte":               "zoë@hôte",
		"\x1b]0;x\x07bob@h":      "?]0;x?bob@h",
		"carol\n@h\xff":          "carol?@h?",
		"dave@host.example.test": "dave@host.example.test",
	} {
		got := printableLabel(in)
		if got != want || !tunnel.Printable(got) {
			t.Errorf("printableLabel(%q) = %q, want %q", in, got, want)
		}
	}
	if len(NewSecret()) < tunnel.MinSecretLen || NewSecret() == NewSecret() {
		t.Error("NewSecret: too short or not random")
	}
}
