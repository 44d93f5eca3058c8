package addrset

import (
	"net/netip"
	"testing"
	"time"
)

func TestExpireAndStayBounded(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(func() time.Time { return now })
	a := netip.MustParseAddr("10.1.1.1")
	l.Add(a, 30*time.Second) // below the floor: kept MinTTL
	if !l.Has(a) || !l.Has(netip.MustParseAddr("::ffff:10.1.1.1")) {
		t.Fatal("not learned")
	}
	now = now.Add(MinTTL + time.Second)
	if l.Has(a) {
		t.Fatal("not expired")
	}
	for i := range MaxSize + 100 {
		l.Add(netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)}), time.Hour)
	}
	if n := len(l.until); n > MaxSize {
		t.Fatalf("%d entries, bound %d", n, MaxSize)
	}
}
