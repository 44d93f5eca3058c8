package daemon

import (
	"strings"
	"testing"

	"github.com/detour-dev/detour/tunnel"
)

func TestStillHeld(t *testing.T) {
	cases := []struct {
		name string
		list []tunnel.InterceptInfo
		want string // "" for held
	}{
		{"ours", []tunnel.InterceptInfo{{Name: "other", Holder: "bob@h"}, {Name: "hello", Port: 8080, Holder: "alice@l", Yours: true}}, ""},
		{"same name, another session's", []tunnel.InterceptInfo{{Name: "hello", Port: 8080, Holder: "alice@l"}}, "now held by another session (alice@l)"},
		{"gone", []tunnel.InterceptInfo{{Name: "other", Yours: true}}, "gone from the agent"},
		{"empty list", nil, "gone from the agent"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := stillHeld(c.list, "hello")
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("held, got %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
}
