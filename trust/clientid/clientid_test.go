package clientid

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"

	"github.com/meshfed/meshfed/trust/devca"
)

// TestDevCAIdentity: an SVID minted from the development CA of east is accepted by a
// workload of west that demands client certificates of east, and the workload's SPIFFE
// ID is checked against west's bundle; a workload of an unknown trust domain is refused.
func TestDevCAIdentity(t *testing.T) {
	dir := t.TempDir()
	east, err := devca.Init(dir, "east.test", devca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	west, err := devca.Init(dir, "west.test", devca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := devca.Init(t.TempDir(), "other.test", devca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pool := func(ca *devca.CA) *x509.CertPool {
		roots, err := ca.Roots()
		if err != nil {
			t.Fatal(err)
		}
		p := x509.NewCertPool()
		for _, r := range roots {
			p.AddCert(r)
		}
		return p
	}
	serve := func(ca *devca.CA) string {
		s, err := ca.Issue(devca.IssueRequest{ID: "spiffe://" + ca.TrustDomain().Name() + "/ns/demo/sa/echo"})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*s.TLSCertificate()},
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool(east)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { _ = c.(*tls.Conn).Handshake(); c.Write([]byte("ok\n")); c.Close() }()
			}
		}()
		return ln.Addr().String()
	}
	id, err := Load(context.Background(), Options{DevCADir: dir, TrustDomain: "east.test",
		Roots: map[string]*x509.CertPool{"east.test": pool(east), "west.test": pool(west)}})
	if err != nil {
		t.Fatal(err)
	}
	if id.ID != "spiffe://east.test/ns/meshfed-system/sa/meshfed-drill" || !id.HasCert() || !strings.Contains(id.Source, "development CA") {
		t.Fatalf("identity %+v", id)
	}
	call := func(addr string) (string, error) {
		c, err := tls.Dial("tcp", addr, id.ClientTLS())
		if err != nil {
			return "", err
		}
		defer c.Close()
		b := make([]byte, 3)
		if _, err := c.Read(b); err != nil {
			return "", err
		}
		p, _ := PeerID(c.ConnectionState())
		return p.String(), nil
	}
	if got, err := call(serve(west)); err != nil || got != "spiffe://west.test/ns/demo/sa/echo" {
		t.Fatalf("west's workload: %q, %v", got, err)
	}
	if _, err := call(serve(other)); err == nil || !strings.Contains(err.Error(), "no trust bundle of other.test") {
		t.Fatalf("unknown trust domain: %v", err)
	}

	// No CA of that trust domain: no identity, no error; the workload then says why.
	none, err := Load(context.Background(), Options{DevCADir: dir, TrustDomain: "north.test"})
	if err != nil || none.HasCert() || none.Source != "none" {
		t.Fatalf("no CA: %+v, %v", none, err)
	}
	c, err := tls.Dial("tcp", serve(west), none.ClientTLS())
	if err == nil {
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("without a certificate: %v", err)
	}
}
