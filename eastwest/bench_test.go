package eastwest

import (
	"crypto/tls"
	"io"
	"net"
	"testing"

	"github.com/meshfed/meshfed/eastwest/internal/tlstest"
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
