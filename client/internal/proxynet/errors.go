package proxynet

import (
	"context"
	"errors"
	"net"
	"net/http"
	"syscall"

	"github.com/things-go/go-socks5/statute"

	"github.com/detour-dev/detour/tunnel"
)

// failure is how a failed connect is told to a client: a SOCKS5 reply
// code, an HTTP status, and a few words for the HTTP body.
type failure struct {
	socks  uint8
	status int
	what   string
}

func classify(err error) failure {
	var ne net.Error
	switch {
	case errors.Is(err, ErrNotFound):
		return failure{statute.RepHostUnreachable, http.StatusBadGateway, "the name does not resolve"}
	case errors.Is(err, tunnel.ErrDialDenied):
		return failure{statute.RepRuleFailure, http.StatusForbidden, "the agent refuses this destination"}
	case errors.Is(err, errLoop):
		return failure{statute.RepRuleFailure, http.StatusLoopDetected, "the destination is this proxy"}
	case errors.Is(err, tunnel.ErrDialRefused), errors.Is(err, syscall.ECONNREFUSED):
		return failure{statute.RepConnectionRefused, http.StatusBadGateway, "connection refused"}
	case errors.Is(err, syscall.ENETUNREACH):
		return failure{statute.RepNetworkUnreachable, http.StatusBadGateway, "network unreachable"}
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return failure{statute.RepTTLExpired, http.StatusGatewayTimeout, "timed out"}
	}
	return failure{statute.RepHostUnreachable, http.StatusBadGateway, "unreachable"}
}
