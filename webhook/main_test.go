package webhook

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind (the server
// and certificate loops must stop with their context).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
