package eastwest

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshfed/meshfed/api/fault"
	"github.com/meshfed/meshfed/api/healthwire"
	"github.com/meshfed/meshfed/api/names"
)

func withFault(rt *RouteTable, f fault.Fault) *RouteTable {
	c := *rt
	if f.ID == "" {
		f.ID = "drill-1"
	}
	c.Faults = []fault.Fault{f}
	return &c
}

// dialTimeout connects and handshakes with sni under a deadline: the error says how the
// gateway answered (a timeout: nothing; a reset: RST).
func handshake(addr, sni string, d time.Duration) (*tls.Conn, time.Duration, error) {
	start := time.Now()
	raw, err := net.DialTimeout("tcp", addr, d)
	if err != nil {
		return nil, time.Since(start), err
	}
	_ = raw.SetDeadline(start.Add(d))
	c := tls.Client(raw, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err := c.Handshake(); err != nil {
		raw.Close()
		return nil, time.Since(start), err
	}
	_ = raw.SetDeadline(time.Time{})
	return c, time.Since(start), nil
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func ping(c *tls.Conn, br *bufio.Reader, d time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(d))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, healthwire.Ping); err != nil {
		return "", err
	}
	return healthwire.ReadStreamLine(br)
}

// faultGateway is a gateway of west routing demo/echo to a real backend.
func faultGateway(t *testing.T) (*backend, *RouteTable, *gw) {
	t.Helper()
	b := startBackend(t, "127.0.0.1:0")
	rt := echoTable(b.addr)
	return b, rt, startGateway(t, Config{Cluster: "west"}, rt)
}

// openStream opens a health stream, as the federations' checkers hold.
func openStream(t *testing.T, g *gw) (*tls.Conn, *bufio.Reader) {
	t.Helper()
	c := dialHealthStream(t, g.addr)
	return c, bufio.NewReaderSize(c, healthwire.MaxLine+1)
}

// TestFaultBlackhole: a global blackhole answers nothing on new connections, the health
// name and open health streams (no bytes, no close: a timeout, not a reset), and what it
// held goes on when the federation lifts it.
func TestFaultBlackhole(t *testing.T) {
	_, rt, g := faultGateway(t)
	stream, br := openStream(t, g)
	if line, err := ping(stream, br, 5*time.Second); err != nil || !strings.HasPrefix(line, "ok") {
		t.Fatalf("before: %q, %v", line, err)
	}

	g.SetRoutes(withFault(rt, fault.Fault{Spec: fault.Spec{Kind: fault.Blackhole}, Deadline: time.Now().Add(time.Minute)}))
	for _, sni := range []string{echoSNI, names.HealthSNI} {
		if _, _, err := handshake(g.addr, sni, 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s during a blackhole: %v, want a timeout (no answer at all)", sni, err)
		}
	}
	if _, err := ping(stream, br, 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("health stream during a blackhole: %v, want a timeout", err)
	}
	// A held connection is not closed: it goes on once the fault is lifted.
	held, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	heldTLS := tls.Client(held, &tls.Config{ServerName: names.HealthSNI, InsecureSkipVerify: true})
	got := make(chan error, 1)
	go func() { _, err := io.ReadAll(heldTLS); got <- err }()
	waitFor(t, "four connections held", 5*time.Second, func() bool {
		return counter(g.faults.m.conns.WithLabelValues("blackhole", "held")) >= 4
	})

	g.SetRoutes(rt) // the federation lifts it
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("held health connection after the lift: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("held connection still held 10s after the lift")
	}
	c, _, err := handshake(g.addr, echoSNI, 5*time.Second)
	if err != nil {
		t.Fatalf("after the lift: %v", err)
	}
	echo(t, c, "back")
	c.Close()
	// The stream's ping was read during the hold: its answer comes now, then new ones.
	if line, err := healthwire.ReadStreamLine(br); err != nil || !strings.HasPrefix(line, "ok") {
		t.Fatalf("held ping's answer: %q, %v", line, err)
	}
	if line, err := ping(stream, br, 5*time.Second); err != nil || !strings.HasPrefix(line, "ok") {
		t.Fatalf("stream after the lift: %q, %v", line, err)
	}
}

// TestFaultReset: new connections, the health name and open health streams are reset.
func TestFaultReset(t *testing.T) {
	b, rt, g := faultGateway(t)
	stream, br := openStream(t, g)
	g.SetRoutes(withFault(rt, fault.Fault{Spec: fault.Spec{Kind: fault.Reset}, Deadline: time.Now().Add(time.Minute)}))
	for _, sni := range []string{echoSNI, names.HealthSNI} {
		if _, _, err := handshake(g.addr, sni, 5*time.Second); !isReset(err) {
			t.Errorf("%s during a reset fault: %v, want a connection reset", sni, err)
		}
	}
	if _, err := ping(stream, br, 5*time.Second); !isReset(err) {
		t.Errorf("health stream during a reset fault: %v, want a connection reset", err)
	}
	if b.accepted.Load() != 0 {
		t.Errorf("the backend got %d connections", b.accepted.Load())
	}
}

// TestFaultDelay: each new connection's hello and each health answer is held the delay.
func TestFaultDelay(t *testing.T) {
	_, rt, g := faultGateway(t)
	stream, br := openStream(t, g)
	const delay = 400 * time.Millisecond
	g.SetRoutes(withFault(rt, fault.Fault{Spec: fault.Spec{Kind: fault.Delay, Delay: delay}, Deadline: time.Now().Add(time.Minute)}))
	for _, sni := range []string{echoSNI, names.HealthSNI} {
		c, took, err := handshake(g.addr, sni, 10*time.Second)
		if err != nil || took < delay {
			t.Errorf("%s during a delay fault: took %v, %v; want at least %v and no error", sni, took, err, delay)
		}
		if c != nil {
			c.Close()
		}
	}
	start := time.Now()
	if line, err := ping(stream, br, 10*time.Second); err != nil || !strings.HasPrefix(line, "ok") || time.Since(start) < delay {
		t.Errorf("health stream: %q, %v after %v; want ok after at least %v", line, err, time.Since(start), delay)
	}
}

// TestFaultErrorFraction: about that fraction of new connections is reset.
func TestFaultErrorFraction(t *testing.T) {
	_, rt, g := faultGateway(t)
	g.SetRoutes(withFault(rt, fault.Fault{Spec: fault.Spec{Kind: fault.Error, Fraction: 0.5}, Deadline: time.Now().Add(time.Minute)}))
	const n = 200
	resets := 0
	for i := 0; i < n; i++ {
		c, _, err := handshake(g.addr, echoSNI, 5*time.Second)
		switch {
		case isReset(err):
			resets++
		case err != nil:
			t.Fatalf("connection %d: %v", i, err)
		default:
			c.Close()
		}
	}
	// Binomial(200, 0.5): 100 ± 7 (sd); 60..140 is more than 5 sd either way.
	if resets < 60 || resets > 140 {
		t.Errorf("%d of %d connections reset with error=0.5", resets, n)
	}
}

// TestFaultNarrowed: a fault narrowed to one service leaves the health name and other
// services alone.
func TestFaultNarrowed(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0")
	rt := echoTable(b.addr)
	other := ServiceKey{Namespace: "demo", Name: "other", Port: 8443}
	rt.Services[other] = rt.Services[ServiceKey{Namespace: "demo", Name: "echo", Port: 8443}]
	g := startGateway(t, Config{Cluster: "west"}, rt)
	g.SetRoutes(withFault(rt, fault.Fault{Spec: fault.Spec{Kind: fault.Reset}, Namespace: "demo", Service: "echo",
		Deadline: time.Now().Add(time.Minute)}))
	if _, _, err := handshake(g.addr, echoSNI, 5*time.Second); !isReset(err) {
		t.Errorf("demo/echo: %v, want a reset", err)
	}
	for _, sni := range []string{names.HealthSNI, names.ServiceSNI("demo", "other", 8443)} {
		c, _, err := handshake(g.addr, sni, 5*time.Second)
		if err != nil {
			t.Errorf("%s: %v, want it untouched", sni, err)
			continue
		}
		c.Close()
	}
}

// TestFaultDeadline: with no word from any federation, the gateway lifts a fault at its
// deadline by its own clock, within a second, and releases what it held.
func TestFaultDeadline(t *testing.T) {
	_, rt, g := faultGateway(t)
	deadline := time.Now().Add(1500 * time.Millisecond)
	g.SetRoutes(withFault(rt, fault.Fault{Spec: fault.Spec{Kind: fault.Blackhole}, Deadline: deadline}))
	if len(g.Faults()) != 1 {
		t.Fatalf("faults in force: %v", g.Faults())
	}
	c, _, err := handshake(g.addr, names.HealthSNI, 30*time.Second) // held, then answered
	if err != nil {
		t.Fatalf("held health check: %v", err)
	}
	c.Close()
	if late := time.Since(deadline); late < 0 || late > time.Second {
		t.Errorf("the held check was answered %v after the deadline; want within [0, 1s]", late)
	}
	if f := g.Faults(); len(f) != 0 {
		t.Errorf("faults in force after the deadline: %v", f)
	}
	// A fault whose deadline has passed is not put in force at all.
	g.SetRoutes(withFault(rt, fault.Fault{Spec: fault.Spec{Kind: fault.Reset}, Deadline: time.Now().Add(-time.Second)}))
	if c, _, err := handshake(g.addr, echoSNI, 5*time.Second); err != nil {
		t.Errorf("expired fault applied: %v", err)
	} else {
		c.Close()
	}
}
