package hello

import (
	"bytes"
	"crypto/tls"
	"errors"
	"github.com/meshfed/meshfed/eastwest/internal/tlstest"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
)

// bytesConn is a net.Conn over fixed input whose writes are dropped: it feeds captured
// bytes to a real crypto/tls server (no network involved, so nothing to fake beyond I/O).
type bytesConn struct {
	r *bytes.Reader
}

func (c *bytesConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *bytesConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *bytesConn) Close() error                     { return nil }
func (c *bytesConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *bytesConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *bytesConn) SetDeadline(time.Time) error      { return nil }
func (c *bytesConn) SetReadDeadline(time.Time) error  { return nil }
func (c *bytesConn) SetWriteDeadline(time.Time) error { return nil }

var errStop = errors.New("stop after hello")

// stdParse runs crypto/tls's server on raw and returns what it saw of the (outer) hello,
// or nil when crypto/tls refused the bytes before looking at the hello's contents.
func stdParse(raw []byte) *tls.ClientHelloInfo {
	var got *tls.ClientHelloInfo
	capture := func(chi *tls.ClientHelloInfo) {
		cp := *chi
		got = &cp
	}
	cfg := &tls.Config{
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			capture(chi)
			return nil, errStop
		},
		// Called with the outer hello when ECH is present, before ECH processing.
		GetEncryptedClientHelloKeys: func(chi *tls.ClientHelloInfo) ([]tls.EncryptedClientHelloKey, error) {
			capture(chi)
			return nil, errStop
		},
	}
	_ = tls.Server(&bytesConn{r: bytes.NewReader(raw)}, cfg).Handshake()
	return got
}

// reframe splits the handshake message carried by raw's records into records of at most
// size bytes each, as a client (or a middlebox) may.
func reframe(t testing.TB, raw []byte, size int) []byte {
	t.Helper()
	msg, _, err := Assemble(raw, 1<<20, nil)
	if err != nil {
		t.Fatalf("reframe: %v", err)
	}
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, recordTypeHandshake, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

// record wraps a handshake message in one TLS record (or several when over 2^14).
func record(msg []byte) []byte {
	var out []byte
	for len(msg) > 0 {
		n := min(maxPlaintextRecordLen, len(msg))
		out = append(out, recordTypeHandshake, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

// corpus returns the real and synthetic hellos every test and the fuzz target start from:
// the files under testdata/hellos (captured from openssl s_client and curl here, see
// TestCaptureExternal) plus hellos made now by this Go's crypto/tls.
func corpus(t testing.TB) map[string][]byte {
	t.Helper()
	out := map[string][]byte{
		"go-default":      tlstest.GoHello(t, &tls.Config{ServerName: "outbound_.8443_._.echo.demo.svc.cluster.local", NextProtos: []string{"h2", "http/1.1"}}),
		"go-tls12-only":   tlstest.GoHello(t, &tls.Config{ServerName: "a.example", MaxVersion: tls.VersionTLS12}),
		"go-no-sni":       tlstest.GoHello(t, &tls.Config{InsecureSkipVerify: true}),
		"go-health":       tlstest.GoHello(t, &tls.Config{ServerName: "health.meshfed.internal"}),
		"browser-ech":     tlstest.BrowserHello("outbound_.443_._.web.shop.svc.cluster.local"),
		"browser-ech-idn": tlstest.BrowserHello("xn--bcher-kva.example"),
	}
	files, _ := filepath.Glob("testdata/hellos/*.bin")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out["file:"+filepath.Base(f)] = b
	}
	return out
}

func helloWithSNI(t testing.TB, name string) []byte {
	return helloWithExtensions(t, [][2]any{{uint16(extServerName), sniData(name)}})[recordHeaderLen:]
}

func sniData(name string) []byte {
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint8(0)
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(name)) })
	})
	return b.BytesOrPanic()
}

// helloWithExtensions builds a minimal TLS 1.2-style hello (one record) with the given
// extensions, each {type uint16, data []byte}.
func helloWithExtensions(t testing.TB, exts [][2]any) []byte {
	t.Helper()
	var b cryptobyte.Builder
	b.AddUint8(typeClientHello)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(tls.VersionTLS12)
		b.AddBytes(make([]byte, 32))
		b.AddUint8(0)
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint16(tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256) })
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, e := range exts {
				b.AddUint16(e[0].(uint16))
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(e[1].([]byte)) })
			}
		})
	})
	return record(b.BytesOrPanic())
}
