package eastwest

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/api/healthwire"
	"github.com/meshfed/meshfed/api/names"
)

// TestHealthStream: a checker offering the stream mode gets it, and one status line per
// ping over one connection; when the gateway drains, the next answer says "draining" and
// the stream ends; a checker that does not offer it still gets one line and a close.
func TestHealthStream(t *testing.T) {
	g := startGateway(t, Config{Cluster: "west"}, echoTable("127.0.0.1:9"))
	c := dialHealthStream(t, g.addr)
	if p := c.ConnectionState().NegotiatedProtocol; p != healthwire.StreamALPN {
		t.Fatalf("negotiated %q, want %q", p, healthwire.StreamALPN)
	}
	br := bufio.NewReaderSize(c, healthwire.MaxLine+1)
	for i := 0; i < 3; i++ {
		if _, err := io.WriteString(c, healthwire.Ping); err != nil {
			t.Fatal(err)
		}
		line, err := healthwire.ReadStreamLine(br)
		if err != nil || !strings.HasPrefix(line, "ok cluster=west") {
			t.Fatalf("answer %d: %q, %v", i, line, err)
		}
	}
	// One-shot checkers are unchanged (TestHealthName has the details).
	one, err := tls.Dial("tcp", g.addr, &tls.Config{ServerName: names.HealthSNI, InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(one); err != nil || !strings.HasPrefix(string(b), "ok cluster=west") {
		t.Fatalf("one-shot: %q, %v", b, err)
	}
	one.Close()

	g.Drain()
	if _, err := io.WriteString(c, healthwire.Ping); err != nil {
		t.Fatal(err)
	}
	line, err := healthwire.ReadStreamLine(br)
	if err != nil || !strings.HasPrefix(line, "draining cluster=west") {
		t.Fatalf("after Drain: %q, %v", line, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("the stream goes on after a draining answer: %v", err)
	}
}

// TestHealthStreamIdleAtDrain: a stream whose checker sends nothing does not hold a drain
// up: it ends about a second after the drain begins.
func TestHealthStreamIdleAtDrain(t *testing.T) {
	g := startGateway(t, Config{Cluster: "west"}, echoTable("127.0.0.1:9"))
	dialHealthStream(t, g.addr)
	waitFor(t, "the stream counted", 2*time.Second, func() bool { return g.Active() == 1 })
	start := time.Now()
	g.Drain()
	waitFor(t, "the idle stream closed", 5*time.Second, func() bool { return g.Active() == 0 })
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("idle stream closed %v after the drain", d)
	}
}

// dialHealthStream opens a health connection offering the stream mode.
func dialHealthStream(t *testing.T, addr string) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: names.HealthSNI, InsecureSkipVerify: true,
		NextProtos: []string{healthwire.StreamALPN}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
