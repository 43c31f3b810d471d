package eastwest

import (
	"context"
	"net"
	"testing"
	"time"
)

// wrappedListener is a net.Listener that is not a *net.TCPListener.
type wrappedListener struct{ net.Listener }

// In poll-splice mode a listener the raw accept loop cannot take (not a
// *net.TCPListener) is served through its Accept, and connections are proxied as usual.
func TestServeWrappedListener(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0")
	g, err := New(Config{Cluster: "east", CopyMode: CopyPollSplice, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	g.SetRoutes(echoTable(b.addr))
	ln, err := Listen(context.Background(), "127.0.0.1:0", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Serve(ctx, wrappedListener{ln}) }()
	c, err := dialTLS(t, ln.Addr().String(), echoSNI, b.pool)
	if err != nil {
		t.Fatal(err)
	}
	echo(t, c, "through net.Listener")
	c.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}
