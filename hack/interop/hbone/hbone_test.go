package hbone

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"slices"
	"sync"
	"testing"

	"istio.io/istio/pkg/hbone"
)

const authority = "echo.demo.svc.cluster.local:8443"

// peers is what a source ztunnel verified: the outer peer (the gateway) and the inner peer
// (the destination workload).
type peers struct {
	mu           sync.Mutex
	outer, inner []string
}

func (p *peers) record(list *[]string, roots ...*ca) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		id, err := verifySPIFFE(raw, roots...)
		if err == nil {
			p.mu.Lock()
			*list = append(*list, id)
			p.mu.Unlock()
		}
		return err
	}
}

// TestIstioDoubleHBONEThroughMeshfed: east's source "ztunnel" is Istio's own double-HBONE
// dialer (istio.io/istio/pkg/hbone.NewDoubleDialer) with an SVID of east's trust domain. It
// dials west's meshfed gateway (a real `meshfed gateway` process, HBONE listener, mTLS) with
// the CONNECT authority of an exported service port; the gateway forwards the inner stream
// unchanged to the endpoint's HBONE port, where west's destination ztunnel terminates the
// inner mTLS with the destination workload's SVID and forwards to the app.
func TestIstioDoubleHBONEThroughMeshfed(t *testing.T) {
	dir := t.TempDir()
	east, west := newCA(t, "east.example"), newCA(t, "west.example")
	gwCert, gwID := west.svid(t, "/ns/istio-system/sa/meshfed-gateway")
	dstCert, dstID := west.svid(t, "/ns/demo/sa/echo")
	srcCert, srcID := east.svid(t, "/ns/demo/sa/client")
	certFile, keyFile := writePEM(t, dir, "gateway", gwCert)
	writeBundleMap(t, dir, east, west)

	echo := startApp(t, "echo")
	zt := startZtunnel(t, dstCert, echo.addr, east, west)
	gw := startGateway(t, dir, certFile, keyFile, zt.addr)

	var seen peers
	dialer := func(client tls.Certificate) hbone.Dialer {
		// Outer: mTLS to the gateway by address (no SNI), ALPN h2 (the transport adds it);
		// the gateway must prove west's gateway identity. Inner: mTLS through the tunnel to
		// the destination, which must prove the destination workload's identity.
		outerTLS := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{client},
			InsecureSkipVerify: true, VerifyPeerCertificate: seen.record(&seen.outer, west)}
		innerTLS := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{client},
			InsecureSkipVerify: true, VerifyPeerCertificate: seen.record(&seen.inner, west)}
		return hbone.NewDoubleDialer(
			hbone.Config{ProxyAddress: gw.hbone, TLS: outerTLS},
			hbone.Config{ProxyAddress: zt.addr, TLS: innerTLS},
			innerTLS)
	}
	dial := func() net.Conn {
		t.Helper()
		c, err := dialer(srcCert).Dial("tcp", authority)
		if err != nil {
			t.Fatalf("Istio double HBONE dial through meshfed's gateway: %v", err)
		}
		return c
	}

	t.Run("bytes-both-ways-and-identity", func(t *testing.T) {
		c := dial()
		payload := make([]byte, 1<<20)
		if _, err := rand.Read(payload); err != nil {
			t.Fatal(err)
		}
		got := make(chan []byte, 1)
		go func() {
			b, _ := io.ReadAll(io.LimitReader(c, int64(len(payload))))
			got <- b
		}()
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
		if b := <-got; !bytes.Equal(b, payload) {
			t.Fatalf("echoed %d bytes, not the %d sent", len(b), len(payload))
		}
		c.Close() // the client's end reaches the app as EOF after exactly what was sent
		if a := echo.next(t); !a.eof || a.received != int64(len(payload)) {
			t.Errorf("app: %+v, want EOF after %d bytes", a, len(payload))
		}
		seen.mu.Lock()
		outer, inner := append([]string(nil), seen.outer...), append([]string(nil), seen.inner...)
		seen.mu.Unlock()
		if !slices.Equal(inner, []string{dstID}) {
			t.Errorf("inner TLS peer %v, want the destination workload %s (never the gateway %s)", inner, dstID, gwID)
		}
		if !slices.Equal(outer, []string{gwID}) {
			t.Errorf("outer TLS peer %v, want west's gateway %s", outer, gwID)
		}
		callers, auths := zt.seen()
		if !slices.Equal(callers, []string{srcID}) {
			t.Errorf("destination ztunnel's callers %v, want east's source %s end to end", callers, srcID)
		}
		if !slices.Equal(auths, []string{authority}) {
			t.Errorf("inner CONNECT authorities %v, want %s", auths, authority)
		}
	})
}

// TestIstioHalfCloseAndRefusals: the app's half-close reaches Istio's client as EOF after
// exactly the app's bytes while the client's direction stays open; and what meshfed's
// gateway refuses, Istio's dialer sees refused, with no backend contacted.
func TestIstioHalfCloseAndRefusals(t *testing.T) {
	dir := t.TempDir()
	east, west, other := newCA(t, "east.example"), newCA(t, "west.example"), newCA(t, "other.example")
	gwCert, _ := west.svid(t, "/ns/istio-system/sa/meshfed-gateway")
	dstCert, _ := west.svid(t, "/ns/demo/sa/echo")
	srcCert, _ := east.svid(t, "/ns/demo/sa/client")
	strangerCert, _ := other.svid(t, "/ns/demo/sa/client")
	certFile, keyFile := writePEM(t, dir, "gateway", gwCert)
	writeBundleMap(t, dir, east, west)
	greet := startApp(t, "greet")
	zt := startZtunnel(t, dstCert, greet.addr, east, west)
	gw := startGateway(t, dir, certFile, keyFile, zt.addr)
	dialer := func(client tls.Certificate) hbone.Dialer {
		tc := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{client}, InsecureSkipVerify: true,
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error { _, err := verifySPIFFE(raw, west); return err }}
		return hbone.NewDoubleDialer(hbone.Config{ProxyAddress: gw.hbone, TLS: tc}, hbone.Config{ProxyAddress: zt.addr, TLS: tc}, tc)
	}

	t.Run("app-half-close", func(t *testing.T) {
		c, err := dialer(srcCert).Dial("tcp", authority)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		// The app answers and closes its write side: the client reads exactly "pong" and then
		// EOF (the destination ztunnel ends the inner stream; meshfed's gateway carries it).
		b, err := io.ReadAll(c)
		if err != nil || string(b) != "pong" {
			t.Fatalf("read %q, %v; want \"pong\" then EOF", b, err)
		}
		// The app kept its read side open after its half-close and saw the client's end.
		c.Close()
		if a := greet.next(t); !a.eof || a.received != 4 {
			t.Errorf("app: %+v, want EOF after the 4 bytes of ping", a)
		}
	})

	before := len(func() []string { _, a := zt.seen(); return a }())
	for _, tt := range []struct {
		name, authority string
		client          tls.Certificate
	}{
		{"unknown-service", "nope.demo.svc.cluster.local:8443", srcCert},
		{"unexported-port", "echo.demo.svc.cluster.local:9999", srcCert},
		{"ip-authority", zt.addr, srcCert},
		{"unfederated-trust-domain", authority, strangerCert},
	} {
		t.Run("refused-"+tt.name, func(t *testing.T) {
			c, err := dialer(tt.client).Dial("tcp", tt.authority)
			if err == nil {
				c.Close()
				t.Fatalf("Istio's dialer got through to %s", tt.authority)
			}
			t.Logf("refused as wanted: %v", err)
		})
	}
	if _, a := zt.seen(); len(a) != before {
		t.Errorf("the destination ztunnel was contacted by refused tunnels: %v", a[before:])
	}
}
