package kubetest

import (
	"context"
	"testing"
	"time"

	"github.com/meshfed/meshfed/internal/ctxtime"
)

// Eventually calls cond every 50 ms until it returns nil, and fails the test with cond's
// last error when timeout passes. It is how tests wait on controllers: on a condition with a
// deadline, never a sleep.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	err := ctxtime.Poll(ctx, 50*time.Millisecond, func() (bool, error) {
		last = cond()
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("not true within %v: %v", timeout, last)
	}
}
