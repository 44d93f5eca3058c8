package grpcecho_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: servers and
// client connections must be stopped by their tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
