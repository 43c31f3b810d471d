package tlstest

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"

	"github.com/meshfed/meshfed/internal/testpki"
)

const (
	typeClientHello = 1
	extServerName   = 0
	extALPN         = 16
	extECH          = 0xfe0d
)

func record(msg []byte) []byte {
	var out []byte
	for len(msg) > 0 {
		n := min(1<<14, len(msg))
		out = append(out, 22, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

// GoHello captures the ClientHello a real crypto/tls client writes (the Go 1.26 default:
// X25519MLKEM768 key share, ~1.6 KiB) for cfg.
func GoHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	c1, c2 := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tls.Client(c1, cfg).Handshake()
	}()
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64<<10)
	n, err := c2.Read(buf) // crypto/tls writes the whole hello in one Write
	if err != nil {
		t.Fatalf("capture hello: %v", err)
	}
	c2.Close()
	c1.Close()
	<-done
	return buf[:n]
}

// BrowserHello builds a Chrome-like ClientHello (~2 KiB): GREASE values, post-quantum
// X25519MLKEM768 key share, ALPN h2/http1.1, and an ECH GREASE extension (0xfe0d), in the
// order Chrome sends them. Synthetic because no browser runs here; the extension layout
// follows what Chrome 131+ puts on the wire.
func BrowserHello(sni string) []byte {
	rnd := func(n int) []byte {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		return b
	}
	u16 := func(b *cryptobyte.Builder, v ...uint16) {
		for _, x := range v {
			b.AddUint16(x)
		}
	}
	ext := func(b *cryptobyte.Builder, typ uint16, f func(*cryptobyte.Builder)) {
		b.AddUint16(typ)
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			if f != nil {
				f(b)
			}
		})
	}
	var b cryptobyte.Builder
	b.AddUint8(typeClientHello)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(tls.VersionTLS12)
		b.AddBytes(rnd(32))
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(rnd(32)) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			u16(b, 0x0a0a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014, 0x009c, 0x009d, 0x002f, 0x0035)
		})
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			ext(b, 0x1a1a, nil) // GREASE
			ext(b, extServerName, func(b *cryptobyte.Builder) {
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
					b.AddUint8(0)
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(sni)) })
				})
			})
			ext(b, 23, nil) // extended_master_secret
			ext(b, 0xff01, func(b *cryptobyte.Builder) { b.AddUint8(0) })
			ext(b, 10, func(b *cryptobyte.Builder) { // supported_groups
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { u16(b, 0x2a2a, 0x11ec, 0x001d, 0x0017, 0x0018) })
			})
			ext(b, 11, func(b *cryptobyte.Builder) { b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) }) })
			ext(b, 35, nil) // session_ticket
			ext(b, extALPN, func(b *cryptobyte.Builder) {
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
					for _, p := range []string{"h2", "http/1.1"} {
						b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(p)) })
					}
				})
			})
			ext(b, 5, func(b *cryptobyte.Builder) { b.AddBytes([]byte{1, 0, 0, 0, 0}) }) // status_request
			ext(b, 13, func(b *cryptobyte.Builder) {                                     // signature_algorithms
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
					u16(b, 0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601)
				})
			})
			ext(b, 18, nil)                          // signed_certificate_timestamp
			ext(b, 51, func(b *cryptobyte.Builder) { // key_share
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
					u16(b, 0x2a2a)
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
					u16(b, 0x11ec)
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(rnd(1184 + 32)) })
					u16(b, 0x001d)
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(rnd(32)) })
				})
			})
			ext(b, 45, func(b *cryptobyte.Builder) { b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(1) }) })
			ext(b, 43, func(b *cryptobyte.Builder) { // supported_versions
				b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { u16(b, 0x3a3a, 0x0304, 0x0303) })
			})
			ext(b, 27, func(b *cryptobyte.Builder) { b.AddBytes([]byte{2, 0, 2}) }) // compress_certificate brotli
			ext(b, 17613, func(b *cryptobyte.Builder) {                             // application_settings
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
					b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte("h2")) })
				})
			})
			ext(b, extECH, func(b *cryptobyte.Builder) { // ECH GREASE: outer, HPKE X25519/SHA256/AES128GCM
				b.AddUint8(0)
				u16(b, 0x0001, 0x0001)
				b.AddUint8(rnd(1)[0])
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(rnd(32)) })
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(rnd(240)) })
			})
			ext(b, 0x4a4a, func(b *cryptobyte.Builder) { b.AddUint8(0) }) // GREASE
		})
	})
	return record(b.BytesOrPanic())
}

// Cert is a self-signed certificate for names (internal/testpki), with its pool to trust it.
func Cert(t testing.TB, names ...string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	c := testpki.New(t, testpki.Spec{CN: names[0], DNS: names, CA: true,
		EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
	return c.TLS(), c.Pool()
}

// ECHConfigList makes an ECH configuration (HPKE X25519, HKDF-SHA256, AES-128-GCM) whose
// public (outer) name is publicName: the list a client is given, and the server's key.
func ECHConfigList(t testing.TB, publicName string) ([]byte, tls.EncryptedClientHelloKey) {
	t.Helper()
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var c cryptobyte.Builder
	c.AddUint16(extECH) // version
	c.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint8(7)       // config_id
		b.AddUint16(0x0020) // DHKEM(X25519, HKDF-SHA256)
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(priv.PublicKey().Bytes()) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint16(0x0001); b.AddUint16(0x0001) })
		b.AddUint8(64) // maximum_name_length
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(publicName)) })
		b.AddUint16(0) // no extensions
	})
	cfg := c.BytesOrPanic()
	var l cryptobyte.Builder
	l.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(cfg) })
	return l.BytesOrPanic(), tls.EncryptedClientHelloKey{Config: cfg, PrivateKey: priv.Bytes()}
}

// DialPassthrough opens TLS to addr with sni in the ClientHello and checks the peer's
// certificate against pool for the name want, not for the SNI: what a mesh client does
// through a passthrough gateway, where the SNI names the route and the certificate the
// workload. The connection has a 10s deadline.
func DialPassthrough(addr, sni string, pool *x509.CertPool, want string) (*tls.Conn, error) {
	cfg := &tls.Config{ServerName: sni,
		InsecureSkipVerify: true, // verified below, against want
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			c, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			_, err = c.Verify(x509.VerifyOptions{Roots: pool, DNSName: want})
			return err
		}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := (&tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := c.(*tls.Conn)
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	return tc, nil
}
