package eastwest

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/eastwest/internal/tlstest"
	"github.com/meshfed/meshfed/internal/hbonetest"
)

// BenchmarkProxyConn is one proxied connection without TLS crypto on either end: a
// captured ClientHello and a 32-byte echo through the gateway to a raw TCP backend, then
// close. It isolates the gateway's per-connection cost (accept, hello, dial, splice setup).
func BenchmarkProxyConn(b *testing.B) {
	for _, mode := range copyModes(b) {
		b.Run(string(mode), func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			hello := tlstest.GoHello(b, &tls.Config{ServerName: echoSNI})
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						buf := make([]byte, len(hello)+32)
						if _, err := io.ReadFull(c, buf); err != nil {
							return
						}
						c.Write(buf[len(hello):])
						io.Copy(io.Discard, c)
					}()
				}
			}()
			g := startBenchGateway(b, Config{CopyMode: mode}, echoTable(ln.Addr().String()))
			msg := append(append([]byte{}, hello...), make([]byte, 32)...)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c, err := net.Dial("tcp", g)
				if err != nil {
					b.Fatal(err)
				}
				c.Write(msg)
				if _, err := io.ReadFull(c, make([]byte, 32)); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

// BenchmarkHBONE is one HBONE tunnel through the gateway to a raw TCP endpoint (its HBONE
// port) with a 32-byte echo, then close: "stream" reuses one mTLS + HTTP/2 connection for
// every tunnel (as a ztunnel pools its connections), "conn" makes a new one per tunnel
// (full TLS 1.3 handshake with client certificate verification).
func BenchmarkHBONE(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 32)
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				c.Write(buf)
			}()
		}
	}()
	p := newPKI(b)
	cert := p.cert(b, gatewayID)
	g, err := New(Config{Registry: prometheus.NewRegistry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		HBONE: &HBONEConfig{Certificate: func() (*tls.Certificate, error) { return cert, nil }, Bundles: p.federated}})
	if err != nil {
		b.Fatal(err)
	}
	port := uint32(ln.Addr().(*net.TCPAddr).Port)
	g.SetRoutes(hboneTable(port, port, port))
	hln, err := g.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.ServeHBONE(ctx, hln); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	cfg := hbonetest.ClientTLS(p.cert(b, clientID), p.all, gatewayID)
	tunnel := func(c *hbonetest.Conn) {
		s, err := c.Connect(context.Background(), echoAuthority)
		if err != nil {
			b.Fatal(err)
		}
		s.Write(make([]byte, 32))
		if _, err := io.ReadFull(s, make([]byte, 32)); err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
	b.Run("stream", func(b *testing.B) {
		c, err := hbonetest.DialConn(context.Background(), hln.Addr().String(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			tunnel(c)
		}
	})
	b.Run("conn", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			c, err := hbonetest.DialConn(context.Background(), hln.Addr().String(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			tunnel(c)
			c.Close()
		}
	})
}
