package peerchain

import (
	"crypto/x509"
	"testing"

	"github.com/meshfed/meshfed/internal/testpki"
)

func TestVerify(t *testing.T) {
	// Leaves with a SPIFFE ID only (no DNS name).
	id := []string{"spiffe://east.test/gw"}
	ca := testpki.New(t, testpki.Spec{CA: true, EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, URIs: id})
	root := ca.Cert
	other := testpki.New(t, testpki.Spec{CA: true, EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, URIs: id}).Cert
	server := ca.Issue(t, testpki.Spec{EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, URIs: id}).Cert
	clientOnly := ca.Issue(t, testpki.Spec{EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, URIs: id}).Cert
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
