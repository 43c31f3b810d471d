package eastwest

import (
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// unansweredEndpoint is an address whose SYNs go unanswered: a listener with a backlog
// of 0 whose queue is already full (the kernel drops further SYNs, the client retransmits
// until its connect times out). Linux: its listen backlog semantics.
func unansweredEndpoint(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + uitoa(uint32(sa.(*syscall.SockaddrInet4).Port))
	// Fill the queue until a connect goes unanswered (backlog 0 holds one connection).
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { c.Close() })
		if i == 10 {
			t.Fatal("the listener's queue never filled")
		}
	}
	return addr
}

// An endpoint that never answers the connect is given up on at ConnectTimeout, ejected,
// and the next endpoint serves the connection; with none other the client is refused.
func TestConnectTimeout(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0")
	hang := unansweredEndpoint(t)
	const timeout = 300 * time.Millisecond
	g := startGateway(t, Config{ConnectTimeout: timeout, ConnectAttempts: 1}, echoTable(hang))
	t0 := time.Now()
	_, err := dialTLS(t, g.addr, echoSNI, b.pool)
	took := time.Since(t0)
	if err == nil || !strings.Contains(err.Error(), "internal error") {
		t.Fatalf("only endpoint unanswered: %v", err)
	}
	if took < timeout || took > timeout+2*time.Second {
		t.Fatalf("refused after %s; want the connect timeout (%s)", took, timeout)
	}
	if g.rejected(ReasonUpstreamFailed) != 1 || counter(g.m.connectErrs.WithLabelValues("demo/echo")) != 1 {
		t.Fatal("upstream_failed or the connect failure not counted")
	}

	g2 := startGateway(t, Config{ConnectTimeout: timeout, EjectBase: time.Minute}, echoTable(hang, b.addr))
	// The endpoint is picked at random: connect until it has been tried, then some more.
	for i, after := 0, 0; after < 5; i++ {
		if i == 60 {
			t.Fatal("the unanswered endpoint was never tried")
		}
		c, err := dialTLS(t, g2.addr, echoSNI, b.pool)
		if err != nil {
			t.Fatalf("connection %d failed although one endpoint answers: %v", i, err)
		}
		echo(t, c, "after a timeout")
		c.Close()
		if counter(g2.m.connectErrs.WithLabelValues("demo/echo")) > 0 {
			after++
		}
	}
	if n := counter(g2.m.connectErrs.WithLabelValues("demo/echo")); n != 1 {
		t.Fatalf("connect failures %v; want exactly 1 (then ejected)", n)
	}
}
