package devca_test

import (
	"context"
	"crypto/x509"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/devca"
)

func TestInitIssueRotate(t *testing.T) {
	dir := t.TempDir()
	ca, err := devca.Init(dir, "a.example", devca.Options{SVIDTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := ca.Issuer()
	again, err := devca.Init(dir, "a.example", devca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if iss, _ := again.Issuer(); !iss.Equal(first) {
		t.Fatal("a second init replaced the root")
	}
	if _, err := ca.Issue(devca.IssueRequest{ID: "spiffe://b.example/x"}); err == nil {
		t.Fatal("issued an SVID of another trust domain")
	}
	svid, err := ca.Issue(devca.IssueRequest{ID: "spiffe://a.example/ns/x/sa/y", DNSNames: []string{"gw.local"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	leaf := svid.Chain[0]
	if leaf.IsCA || len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://a.example/ns/x/sa/y" || leaf.NotAfter.Sub(time.Now()) > 3*time.Second {
		t.Fatalf("leaf: CA=%v URIs=%v notAfter in %v (TTL is capped at the CA's)", leaf.IsCA, leaf.URIs, time.Until(leaf.NotAfter))
	}
	pool := x509.NewCertPool()
	pool.AddCert(first)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}

	// Keep re-issues when the issuer switches.
	var got atomic.Pointer[devca.SVID]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ca.Keep(ctx, devca.IssueRequest{ID: "spiffe://a.example/w"}, 5*time.Millisecond, func(s *devca.SVID) error { got.Store(s); return nil })
	waitfor.Cond(t, 5*time.Second, func() bool { return got.Load() != nil }, "first SVID")
	nr, nk, _ := devca.NewRoot("a.example", 48*time.Hour)
	if err := ca.AddRoot(nr, nk); err != nil {
		t.Fatal(err)
	}
	if err := ca.AddRoot(nr, nk); err != nil {
		t.Fatal("adding the same root twice must be a no-op:", err)
	}
	b, _ := ca.Bundle(time.Now())
	if len(b.X509Roots) != 2 {
		t.Fatalf("trusted roots %d", len(b.X509Roots))
	}
	if err := ca.SwitchIssuer(trust.Fingerprint(nr)); err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 5*time.Second, func() bool { return got.Load().Chain[0].CheckSignatureFrom(nr) == nil }, "re-issued from the new root")
	if err := ca.RemoveRoot(trust.Fingerprint(nr)); err == nil {
		t.Fatal("removed the issuing root")
	}
	if err := ca.RemoveRoot(trust.Fingerprint(first)); err != nil {
		t.Fatal(err)
	}
	if roots, _ := ca.Roots(); len(roots) != 1 || !roots[0].Equal(nr) {
		t.Fatal("old root still trusted")
	}
	_, otherKey, _ := devca.NewRoot("a.example", time.Hour)
	if err := devca.CheckKeyPair(nr, otherKey); err == nil {
		t.Fatal("a foreign key matched")
	}
}
