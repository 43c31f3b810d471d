package main

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"
)

// startEcho serves the echo backend (TLS, or the replayed flights) on a loopback port.
func startEcho(t *testing.T) (string, flights) {
	t.Helper()
	cert, err := selfSigned()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	fl, err := measureFlights(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); echoOrReplay(c, cfg, fl) }()
		}
	}()
	return ln.Addr().String(), fl
}

// TestReplaySameBytes: a replayed connection carries, each way and flight by flight, the
// bytes of a real one (within a few bytes: signatures and tickets vary in length), and
// the same backend still serves TLS.
func TestReplaySameBytes(t *testing.T) {
	addr, fl := startEcho(t)
	if err := oneConn(addr); err != nil {
		t.Fatalf("TLS connection: %v", err)
	}
	if err := oneReplay(addr); err != nil {
		t.Fatalf("replayed connection: %v", err)
	}
	// A real TLS connection over TCP, counted by flight.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	cc := &countConn{Conn: c}
	tc := tls.Client(cc, clientTLS)
	msg := make([]byte, 32)
	if _, err := tc.Write(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(tc, msg); err != nil {
		t.Fatal(err)
	}
	got := cc.flights
	t.Logf("TLS over TCP: %v; replay: hello %d, %+v", got, len(replayHello()), fl)
	if len(got) < 4 {
		t.Fatalf("TLS flights %v: want at least 4", got)
	}
	near := func(name string, a, b int) {
		if d := a - b; d < -32 || d > 32 {
			t.Errorf("%s: replay %d bytes, TLS %d", name, a, b)
		}
	}
	near("hello", len(replayHello()), got[0]) // the replay's ALPN extension: 27 bytes more
	near("S1", int(fl.S1), -got[1])
	near("C2", int(fl.C2), got[2])
	// S2 as read so far: the tickets and the echo (a read may stop before a late ticket).
	near("S2", int(fl.S2), -got[3])
}
