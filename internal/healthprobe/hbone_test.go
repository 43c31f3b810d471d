package healthprobe

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshfed/meshfed/internal/testpki"
)

// hboneListener is a TLS listener on loopback shaped by cfg that completes (or fails) each
// handshake and then holds the connection until the test ends, as meshfed's HBONE listener
// would hold an accepted tunnel connection.
func hboneListener(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(done); ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if c.(*tls.Conn).Handshake() != nil {
					return
				}
				<-done
			}()
		}
	}()
	return ln.Addr().String()
}

// TestProbeHBONE: the probe passes a listener shaped like meshfed's HBONE listener (TLS 1.3,
// ALPN h2, an SVID, a client certificate required) and says what is wrong with anything
// else: another trust domain's SVID (hard: the address is another cluster's), no SVID, no
// h2 (an SNI listener), no client certificate demanded, nothing listening.
func TestProbeHBONE(t *testing.T) {
	svid := testpki.New(t, testpki.Spec{URIs: []string{"spiffe://west.example/ns/meshfed-system/sa/meshfed-gateway"}}).TLS()
	hbone := func(mod func(*tls.Config)) string {
		cfg := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}, ClientAuth: tls.RequireAnyClientCert,
			Certificates: []tls.Certificate{svid}}
		if mod != nil {
			mod(cfg)
		}
		return hboneListener(t, cfg)
	}
	good := hbone(nil)
	closed := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a := ln.Addr().String()
		ln.Close()
		return a
	}()
	cases := []struct {
		name, addr, td string
		ok, hard       bool
		result, detail string
	}{
		{"hbone listener", good, "west.example", true, false, ResultOK, ""},
		{"any trust domain", good, "", true, false, ResultOK, ""},
		{"another trust domain", good, "east.example", false, true, ResultWrongCluster, "not an SVID of trust domain east.example"},
		{"no SVID", hbone(func(c *tls.Config) {
			c.Certificates = []tls.Certificate{testpki.New(t, testpki.Spec{DNS: []string{"gw.example"}}).TLS()}
		}), "west.example", false, false, ResultTLS, "presents no SVID"},
		{"SNI listener (no h2)", hbone(func(c *tls.Config) { c.NextProtos = nil }), "west.example", false, false, ResultTLS, "without ALPN h2"},
		{"no client certificate demanded", hbone(func(c *tls.Config) { c.ClientAuth = tls.NoClientCert }), "west.example", false, false, ResultTLS, "without a client certificate"},
		{"TLS 1.2 only", hbone(func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12 }), "west.example", false, false, ResultTLS, "handshake"},
		{"nothing listening", closed, "west.example", false, true, ResultRefused, "refused"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			o := ProbeHBONE(ctx, c.addr, c.td)
			if o.OK != c.ok || o.Hard != c.hard || o.Result != c.result || (c.detail != "" && (o.Err == nil || !strings.Contains(o.Err.Error(), c.detail))) {
				t.Errorf("got ok=%v hard=%v result=%s err=%v; want ok=%v hard=%v result=%s, error naming %q", o.OK, o.Hard, o.Result, o.Err, c.ok, c.hard, c.result, c.detail)
			}
			t.Logf("%s: %s %v (%v)", c.name, o.Result, o.Err, o.RTT.Round(time.Millisecond))
		})
	}
}
