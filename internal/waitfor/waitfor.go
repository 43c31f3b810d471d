package waitfor

import (
	"testing"
	"time"
)

// Cond polls cond every 5ms until it returns true, or fails the test with the message
// after timeout.
func Cond(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	if !Poll(timeout, cond) {
		t.Fatalf("waited %v: "+format, append([]any{timeout}, args...)...)
	}
}

// Poll polls cond every 5ms until it returns true (true) or timeout passes (false).
func Poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}
