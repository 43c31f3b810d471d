package xdsroutes_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/eastwest/xdsroutes"
	"github.com/meshfed/meshfed/internal/metrictest"
	"github.com/meshfed/meshfed/internal/waitfor"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a leaf for a DNS name and a URI, usable as server and client.
func (ca *testCA) issue(t *testing.T, dns, uri string) (tls.Certificate, []byte, []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: dns},
		DNSNames: []string{dns}, KeyUsage: x509.KeyUsageDigitalSignature, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	if uri != "" {
		u, _ := url.Parse(uri)
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c, certPEM, keyPEM
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTLS: the xDS connection over mTLS, the federation verified by DNS name or SPIFFE ID
// against a CA file; a wrong CA or a missing client certificate gets no table.
func TestTLS(t *testing.T) {
	b1 := startBackend(t, "b1")
	ca, other := newCA(t), newCA(t)
	dir := t.TempDir()
	srvCert, _, _ := ca.issue(t, "federation.east.test", "spiffe://east.test/meshfed/federation")
	_, gwCert, gwKey := ca.issue(t, "gateway.east.test", "spiffe://east.test/meshfed/gateway")
	caFile, otherCA := writeFile(t, dir, "ca.pem", ca.pem), writeFile(t, dir, "other.pem", other.pem)
	certFile, keyFile := writeFile(t, dir, "gw.pem", gwCert), writeFile(t, dir, "gw-key.pem", gwKey)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)

	cp := newControlPlane(t)
	cp.tls = &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	cp.setCluster(inboundCluster("demo", "echo", 8443))
	cp.setCLA(cla(echoName, ep{addr: b1.addr, health: healthy}))
	cp.start()

	for name, files := range map[string]xdsroutes.TLSFiles{
		"dns name":  {CA: caFile, Cert: certFile, Key: keyFile, ServerName: "federation.east.test"},
		"spiffe id": {CA: caFile, Cert: certFile, Key: keyFile, ServerName: "spiffe://east.test/meshfed/federation"},
	} {
		t.Run(name, func(t *testing.T) {
			tc, err := files.Config("127.0.0.1")
			if err != nil {
				t.Fatal(err)
			}
			cfg := fastConfig(cp.addr)
			cfg.TLS = tc
			g := newGateway(t, cfg)
			g.startSource(t, 10*time.Second)
			onlyFrom(t, g, echoSNI, "b1", 2)
		})
	}
	for name, files := range map[string]xdsroutes.TLSFiles{
		"wrong CA":       {CA: otherCA, Cert: certFile, Key: keyFile, ServerName: "federation.east.test"},
		"wrong name":     {CA: caFile, Cert: certFile, Key: keyFile, ServerName: "elsewhere.test"},
		"wrong spiffe":   {CA: caFile, Cert: certFile, Key: keyFile, ServerName: "spiffe://east.test/someone-else"},
		"no client cert": {CA: caFile, ServerName: "federation.east.test"},
	} {
		t.Run(name, func(t *testing.T) {
			tc, err := files.Config("127.0.0.1")
			if err != nil {
				t.Fatal(err)
			}
			cfg := fastConfig(cp.addr)
			cfg.TLS = tc
			g := newGateway(t, cfg)
			ctx, cancel := contextWithCancel()
			done := make(chan error, 1)
			go func() { done <- g.StartSource(ctx, g.src) }()
			waitfor.Cond(t, 10*time.Second, func() bool { return metrictest.Value(t, g.reg, "meshfed_gateway_xds_disconnects_total") >= 2 }, "refused")
			if g.src.Status().Table != nil || g.Ready() == nil {
				t.Fatal("a table over an unverified connection")
			}
			cancel()
			<-done
		})
	}
	for name, tc := range map[string]struct {
		files xdsroutes.TLSFiles
		want  string
	}{
		"no CA":       {xdsroutes.TLSFiles{}, "CA bundle is required"},
		"missing CA":  {xdsroutes.TLSFiles{CA: filepath.Join(dir, "nope.pem")}, "CA bundle"},
		"cert no key": {xdsroutes.TLSFiles{CA: caFile, Cert: certFile}, "both"},
		"bad spiffe":  {xdsroutes.TLSFiles{CA: caFile, ServerName: "spiffe://"}, "not a SPIFFE ID"},
		"not a CA":    {xdsroutes.TLSFiles{CA: keyFile}, "no PEM certificate"},
	} {
		if _, err := tc.files.Config("h"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}
