package main

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// freeAddr is a loopback address nothing listens on (bound, then released): for a listener
// the test starts next, or for a peer that must refuse connections.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startCmd runs cmd in the background until stop: stop cancels its context and returns
// the command's error, failing the test if it has not exited 30s later. Stopping twice
// returns the same error; the test's cleanup stops it if the test did not.
func startCmd(t *testing.T, cmd *cobra.Command) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Fatalf("meshfed %s did not exit 30s after cancellation", cmd.Name())
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}
