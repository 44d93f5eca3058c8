package agent

import (
	"testing"

	"github.com/detour-dev/detour/tunnel"
)

func TestLocalProtocol(t *testing.T) {
	cases := []struct {
		appProtocol, strategy string
		localTLS              bool
		want                  httpProtocol
		probe                 bool
	}{
		{"", tunnel.StrategyHTTP2Probe, false, httpProtocol{}, true},
		{"http", tunnel.StrategyHTTP2Probe, false, httpProtocol{}, false},
		{"grpc", tunnel.StrategyHTTP2Probe, false, httpProtocol{h2: true}, false},
		{"", tunnel.StrategyHTTP2, false, httpProtocol{h2: true}, false},
		{"https", tunnel.StrategyHTTP2Probe, true, httpProtocol{tls: true}, true},
		// --http-plaintext on an https port: plain text, version probed.
		{"https", tunnel.StrategyHTTP2Probe, false, httpProtocol{}, true},
		{"https", tunnel.StrategyHTTP, false, httpProtocol{}, false},
		{"http", tunnel.StrategyHTTP2Probe, true, httpProtocol{tls: true}, false},
	}
	for _, tc := range cases {
		got, probe := localProtocol(tunnel.HTTPSettings{AppProtocol: tc.appProtocol, Strategy: tc.strategy}, tc.localTLS)
		if got != tc.want || probe != tc.probe {
			t.Errorf("appProtocol %q strategy %s localTLS %v: %v probe %v, want %v probe %v", tc.appProtocol, tc.strategy, tc.localTLS, got, probe, tc.want, tc.probe)
		}
		if got.tls != tc.localTLS {
			t.Errorf("appProtocol %q localTLS %v: TLS %v — the local side must speak TLS exactly when asked", tc.appProtocol, tc.localTLS, got.tls)
		}
	}
}
