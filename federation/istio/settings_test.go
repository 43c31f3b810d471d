package istio

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"
)

// testRoot is a self-signed CA certificate named cn.
func testRoot(t *testing.T, cn string) *x509.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pemOf(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

// TestBuildSettingsTrust: every other trust domain's roots become caCertificates (PEM, or
// spiffeBundleUrl <base>/<td> with a bundle endpoint) with their trust domain, and a
// trust domain alias; this cluster's own trust domain is istiod's own CA's business.
func TestBuildSettingsTrust(t *testing.T) {
	east, west, north := testRoot(t, "east"), testRoot(t, "west"), testRoot(t, "north")
	in := SettingsInput{Cluster: "east", MCPAddress: "127.0.0.1:15021", TrustDomain: "east.example",
		Roots: map[string][]*x509.Certificate{"east.example": {east}, "west.example": {west}, "north.example": {north}, "gone.example": nil}}
	s, err := BuildSettings(in)
	if err != nil {
		t.Fatal(err)
	}
	mc := s.MeshConfig
	if want := []string{"gone.example", "north.example", "west.example"}; !slices.Equal(mc.GetTrustDomainAliases(), want) {
		t.Errorf("aliases %v, want %v", mc.GetTrustDomainAliases(), want)
	}
	if len(mc.GetCaCertificates()) != 2 {
		t.Fatalf("caCertificates %v: want north and west (a revoked, empty bundle trusts nothing)", mc.GetCaCertificates())
	}
	for i, want := range []struct {
		td   string
		cert *x509.Certificate
	}{{"north.example", north}, {"west.example", west}} {
		cc := mc.GetCaCertificates()[i]
		if cc.GetPem() != pemOf(want.cert) || !slices.Equal(cc.GetTrustDomains(), []string{want.td}) {
			t.Errorf("caCertificates[%d] = %v, want %s's root", i, cc, want.td)
		}
	}
	if s.Env["ISTIO_MULTIROOT_MESH"] != "true" || s.Env["CLUSTER_ID"] != "east" {
		t.Errorf("env %v", s.Env)
	}
	if y, err := s.MeshConfigYAML(); err != nil || !strings.Contains(string(y), "caCertificates:") {
		t.Fatalf("yaml %s %v", y, err)
	}

	in.BundleURL = "https://bundles.example.org:8443/"
	s, err = BuildSettings(in)
	if err != nil {
		t.Fatal(err)
	}
	var urls []string
	for _, cc := range s.MeshConfig.GetCaCertificates() {
		if cc.GetPem() != "" {
			t.Errorf("PEM with a bundle URL: %v", cc)
		}
		urls = append(urls, cc.GetSpiffeBundleUrl()+" "+strings.Join(cc.GetTrustDomains(), ","))
	}
	want := []string{"https://bundles.example.org:8443/north.example north.example", "https://bundles.example.org:8443/west.example west.example"}
	if !slices.Equal(urls, want) {
		t.Errorf("spiffeBundleUrls %v, want %v", urls, want)
	}
	for _, bad := range []string{"http://bundles.example.org", "bundles.example.org", "https://", "https://x/?a=b"} {
		in.BundleURL = bad
		if _, err := BuildSettings(in); err == nil || !strings.Contains(err.Error(), "spiffe bundle url") {
			t.Errorf("bundle url %q: %v", bad, err)
		}
	}
}
