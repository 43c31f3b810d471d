package peerchain

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net/url"
	"testing"
	"time"
)

func TestVerify(t *testing.T) {
	root, rootKey := newCert(t, nil, nil, true, x509.ExtKeyUsageAny)
	other, _ := newCert(t, nil, nil, true, x509.ExtKeyUsageAny)
	server, _ := newCert(t, root, rootKey, false, x509.ExtKeyUsageServerAuth)
	clientOnly, _ := newCert(t, root, rootKey, false, x509.ExtKeyUsageClientAuth)
	pool := func(c *x509.Certificate) *x509.CertPool { p := x509.NewCertPool(); p.AddCert(c); return p }
	for name, tc := range map[string]struct {
		roots *x509.CertPool
		chain [][]byte
		ok    bool
	}{
		"SVID chaining to the roots": {pool(root), [][]byte{server.Raw}, true},
		"another root":               {pool(other), [][]byte{server.Raw}, false},
		"no certificate":             {pool(root), nil, false},
		"garbage":                    {pool(root), [][]byte{[]byte("nope")}, false},
		"client-only certificate":    {pool(root), [][]byte{clientOnly.Raw}, false},
	} {
		err := Verify(tc.roots)(tc.chain, nil)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// newCert makes a CA (parent nil) or a leaf with a SPIFFE ID only (no DNS name).
func newCert(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, ca bool, eku x509.ExtKeyUsage) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{eku}, BasicConstraintsValid: true, IsCA: ca,
		URIs: []*url.URL{{Scheme: "spiffe", Host: "east.test", Path: "/gw"}}}
	if ca {
		tmpl.KeyUsage = x509.KeyUsageCertSign
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}
