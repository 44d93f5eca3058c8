package wsecho

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: handlers
// must end with Close or their client.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
