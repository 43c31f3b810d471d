// Package testpki makes certificates for tests: roots, intermediates and leaves (ECDSA
// P-256), SPIFFE IDs, expired or future ones, PEM files. It is the one place tests make
// their own certificates (tests that need a real dev CA use trust/devca). Every
// function fails the test on error.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Spec says what a certificate holds. The zero Spec is a leaf valid from an hour ago for
// a day, for server and client authentication.
type Spec struct {
	CN   string
	DNS  []string
	IPs  []net.IP
	URIs []string // e.g. "spiffe://east.example/ns/a/sa/b"; each must parse as a URL
	// CA makes a certificate authority (BasicConstraints CA, KeyUsage CertSign|CRLSign
	// besides DigitalSignature). A self-signed CA with EKU set also serves as a TLS
	// certificate trusted as its own root.
	CA bool
	// NotBefore and NotAfter default to an hour ago and a day from now.
	NotBefore, NotAfter time.Time
	// EKU defaults to server and client authentication for leaves, none for CAs.
	EKU []x509.ExtKeyUsage
	// KeyUsage adds to the defaults (DigitalSignature; CAs also CertSign|CRLSign).
	KeyUsage x509.KeyUsage
	// Serial defaults to a random 63-bit number.
	Serial int64
}

// Cert is a certificate with its key and, unless self-signed, its issuer.
type Cert struct {
	Cert   *x509.Certificate
	Key    *ecdsa.PrivateKey
	Issuer *Cert // nil: self-signed
}

// New makes a self-signed certificate (a root when s.CA).
func New(t testing.TB, s Spec) *Cert {
	t.Helper()
	return issue(t, s, nil)
}

// Issue makes a certificate signed by c.
func (c *Cert) Issue(t testing.TB, s Spec) *Cert {
	t.Helper()
	return issue(t, s, c)
}

func issue(t testing.TB, s Spec, issuer *Cert) *Cert {
	t.Helper()
	c, err := Make(s, issuer)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Make is New (issuer nil) or issuer.Issue for a helper that has no testing.TB (one
// started once for all the tests of a package, such as internal/kubetest.Launch): it
// returns the error instead of failing a test.
func Make(s Spec, issuer *Cert) (*Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(s.Serial),
		Subject:      pkix.Name{CommonName: s.CN},
		DNSNames:     s.DNS,
		IPAddresses:  s.IPs,
		NotBefore:    s.NotBefore,
		NotAfter:     s.NotAfter,
		ExtKeyUsage:  s.EKU,
		KeyUsage:     x509.KeyUsageDigitalSignature | s.KeyUsage,
	}
	if s.Serial == 0 {
		n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
		if err != nil {
			return nil, err
		}
		tmpl.SerialNumber = n.Add(n, big.NewInt(1))
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = now.Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = now.Add(24 * time.Hour)
	}
	for _, u := range s.URIs {
		pu, err := url.Parse(u)
		if err != nil {
			return nil, err
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	if s.CA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else if tmpl.ExtKeyUsage == nil {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	parent, parentKey := tmpl, key
	if issuer != nil {
		parent, parentKey = issuer.Cert, issuer.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Cert{Cert: c, Key: key, Issuer: issuer}, nil
}

// Chain is c and its issuers up to, not including, the self-signed root (what a TLS peer
// sends).
func (c *Cert) Chain() []*x509.Certificate {
	var out []*x509.Certificate
	for x := c; x != nil && (x == c || x.Issuer != nil); x = x.Issuer {
		out = append(out, x.Cert)
	}
	return out
}

// TLS is c as a tls.Certificate, with its chain (Chain) and Leaf set.
func (c *Cert) TLS() tls.Certificate {
	tc := tls.Certificate{PrivateKey: c.Key, Leaf: c.Cert}
	for _, x := range c.Chain() {
		tc.Certificate = append(tc.Certificate, x.Raw)
	}
	return tc
}

// Pool is a pool holding c alone (c as the root to trust).
func (c *Cert) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Cert)
	return p
}

// CertPEM is c's chain (Chain) as PEM.
func (c *Cert) CertPEM() []byte { return PEM(c.Chain()...) }

// KeyPEM is c's key as PEM (EC PRIVATE KEY).
func (c *Cert) KeyPEM(t testing.TB) []byte {
	t.Helper()
	b, err := c.MarshalKey()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// MarshalKey is KeyPEM for a helper without a testing.TB (see Make).
func (c *Cert) MarshalKey() ([]byte, error) {
	b, err := x509.MarshalECPrivateKey(c.Key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: b}), nil
}

// WriteFiles writes c's chain and key into dir as NAME.pem and NAME-key.pem (mode 0600)
// and returns their paths.
func (c *Cert) WriteFiles(t testing.TB, dir, name string) (certPath, keyPath string) {
	t.Helper()
	certPath, keyPath = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	Write(t, certPath, c.CertPEM())
	Write(t, keyPath, c.KeyPEM(t))
	return certPath, keyPath
}

// PEM encodes certificates as PEM blocks.
func PEM(certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

// Write writes data to path (mode 0600).
func Write(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
