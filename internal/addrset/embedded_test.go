package addrset

import (
	"net/netip"
	"slices"
	"testing"
)

func TestEmbeddedIPv4(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string // one of the addresses listed; "" for none
	}{
		{"64:ff9b::a9fe:a9fe", "169.254.169.254"},
		{"64:ff9b:1:a9fe:a9:fe00::", "169.254.169.254"},
		{"64:ff9b:1:0:a9:fea9:fe00:0", "169.254.169.254"},
		{"2002:7f00:1::1", "127.0.0.1"},
		{"2001:0:4136:e378:8000:63bf:5601:5601", "169.254.169.254"},
		{"2001:0:4136:e378:8000:63bf:5601:5601", "65.54.227.120"},
		{"::a9fe:a9fe", "169.254.169.254"},
		{"::ffff:0:a9fe:a9fe", "169.254.169.254"},
		{"2001:db8::1", ""},
		{"fd00:10::5", ""},
		{"::ffff:10.0.0.1", ""}, // mapped: the caller unmaps
		{"10.0.0.1", ""},
	} {
		got := EmbeddedIPv4(netip.MustParseAddr(c.in))
		if c.want == "" {
			if len(got) != 0 {
				t.Errorf("%s: got %v, want none", c.in, got)
			}
			continue
		}
		if !slices.Contains(got, netip.MustParseAddr(c.want)) {
			t.Errorf("%s: got %v, want %s among them", c.in, got, c.want)
		}
	}
}
