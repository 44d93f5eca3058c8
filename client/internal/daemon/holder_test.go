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
		// Two developers' intercepts of one name (names are per client):
		// another's listed first must not make ours look lost.
		{"another's of the same name first", []tunnel.InterceptInfo{{Name: "hello", Port: 8080, Holder: "bob@h"}, {Name: "hello", Port: 8080, Holder: "alice@l", Yours: true}}, ""},
		{"ours on another port is not this one", []tunnel.InterceptInfo{{Name: "hello", Port: 9090, Yours: true}}, "gone from the agent"},
		{"same name, another session's", []tunnel.InterceptInfo{{Name: "hello", Port: 8080, Holder: "alice@l"}}, "now held by another session (alice@l)"},
		{"gone", []tunnel.InterceptInfo{{Name: "other", Yours: true}}, "gone from the agent"},
		{"empty list", nil, "gone from the agent"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := stillHeld(c.list, "hello", 8080)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("held, got %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
}
