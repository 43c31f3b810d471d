package istio

import (
	"crypto/x509"
	"slices"
	"strings"
	"testing"

	"github.com/meshfed/meshfed/internal/testpki"
)

// testRoot is a self-signed CA certificate named cn.
func testRoot(t *testing.T, cn string) *x509.Certificate {
	t.Helper()
	return testpki.New(t, testpki.Spec{CN: cn, CA: true}).Cert
}

func pemOf(c *x509.Certificate) string { return string(testpki.PEM(c)) }

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
	// The proxies' agents ask istiod for the merged roots (PCDS) only with this.
	if v := mc.GetDefaultConfig().GetProxyMetadata()["PROXY_CONFIG_XDS_AGENT"]; v != "true" {
		t.Errorf("defaultConfig.proxyMetadata.PROXY_CONFIG_XDS_AGENT = %q, want true", v)
	}
	// No other trust domain: nothing for the proxies to fetch, no proxy default touched.
	alone, err := BuildSettings(SettingsInput{Cluster: "east", MCPAddress: "127.0.0.1:15021", TrustDomain: "east.example",
		Roots: map[string][]*x509.Certificate{"east.example": {east}}})
	if err != nil || alone.MeshConfig.GetDefaultConfig() != nil || len(alone.MeshConfig.GetCaCertificates()) != 0 {
		t.Errorf("one trust domain: %v, %v", alone.MeshConfig, err)
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

// TestBuildSettingsMCPTLS: with TLS, the config source is SIMPLE TLS with the CA's PEM
// itself in caCertificates (the pinned istiod parses it as PEM: a path would fail istiod's
// start); a CA without TLS, or that is not PEM, is refused.
func TestBuildSettingsMCPTLS(t *testing.T) {
	ca := pemOf(testRoot(t, "mcp-ca"))
	in := SettingsInput{Cluster: "east", MCPAddress: "meshfed-istio.meshfed-system.svc:15020", TrustDomain: "east.example", MCPTLS: true, MCPCAPEM: ca}
	s, err := BuildSettings(in)
	if err != nil {
		t.Fatal(err)
	}
	tls := s.MeshConfig.GetConfigSources()[0].GetTlsSettings()
	if tls.GetMode().String() != "SIMPLE" || tls.GetCaCertificates() != ca {
		t.Errorf("configSources[0].tlsSettings = %v, want SIMPLE with the CA's PEM", tls)
	}
	if k := s.MeshConfig.GetConfigSources()[1]; k.GetAddress() != "k8s://" || k.GetTlsSettings() != nil {
		t.Errorf("configSources[1] = %v", k)
	}
	in.MCPCAPEM = "/etc/meshfed/ca.pem"
	if _, err := BuildSettings(in); err == nil || !strings.Contains(err.Error(), "not a path") {
		t.Errorf("a path as the CA: %v", err)
	}
	in.MCPCAPEM, in.MCPTLS = ca, false
	if _, err := BuildSettings(in); err == nil || !strings.Contains(err.Error(), "only with TLS") {
		t.Errorf("a CA without TLS: %v", err)
	}
	in.MCPCAPEM, in.MCPTLS = "", true
	if s, err := BuildSettings(in); err != nil || s.MeshConfig.GetConfigSources()[0].GetTlsSettings().GetCaCertificates() != "" {
		t.Errorf("TLS with istiod's system roots: %v %v", s, err)
	}
}
