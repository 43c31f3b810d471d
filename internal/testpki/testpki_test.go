package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"
)

func TestChainVerifies(t *testing.T) {
	root := New(t, Spec{CN: "root", CA: true, URIs: []string{"spiffe://east.example"}})
	mid := root.Issue(t, Spec{CN: "mid", CA: true})
	leaf := mid.Issue(t, Spec{CN: "leaf", DNS: []string{"leaf.example"}, URIs: []string{"spiffe://east.example/ns/a/sa/b"}})
	if got := len(leaf.Chain()); got != 2 {
		t.Fatalf("chain of %d, want leaf and intermediate", got)
	}
	inter := x509.NewCertPool()
	inter.AddCert(mid.Cert)
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: root.Pool(), Intermediates: inter, DNSName: "leaf.example"}); err != nil {
		t.Fatal(err)
	}
	if leaf.Cert.URIs[0].String() != "spiffe://east.example/ns/a/sa/b" || !root.Cert.IsCA || leaf.Cert.IsCA {
		t.Fatalf("fields: %v %v %v", leaf.Cert.URIs, root.Cert.IsCA, leaf.Cert.IsCA)
	}
	if _, err := tls.X509KeyPair(leaf.CertPEM(), leaf.KeyPEM(t)); err != nil {
		t.Fatal(err)
	}
	if tc := leaf.TLS(); len(tc.Certificate) != 2 || tc.Leaf != leaf.Cert {
		t.Fatalf("tls certificate: %d certs", len(tc.Certificate))
	}
	// A self-signed CA with an EKU trusts itself as a server certificate.
	self := New(t, Spec{CN: "gw", DNS: []string{"gw.example"}, CA: true, EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if _, err := self.Cert.Verify(x509.VerifyOptions{Roots: self.Pool(), DNSName: "gw.example"}); err != nil {
		t.Fatal(err)
	}
	old := New(t, Spec{CN: "old", NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	if !old.Cert.NotAfter.Before(time.Now()) {
		t.Fatal("NotAfter not applied")
	}
}
