package xdsroutes_test

import (
	"crypto/tls"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/eastwest/xdsroutes"
	"github.com/meshfed/meshfed/internal/metrictest"
	"github.com/meshfed/meshfed/internal/testpki"
	"github.com/meshfed/meshfed/internal/waitfor"
)

// TestTLS: the xDS connection over mTLS, the federation verified by DNS name or SPIFFE ID
// against a CA file; a wrong CA or a missing client certificate gets no table.
func TestTLS(t *testing.T) {
	b1 := startBackend(t, "b1")
	ca, other := testpki.New(t, testpki.Spec{CN: "test CA", CA: true}), testpki.New(t, testpki.Spec{CN: "test CA", CA: true})
	dir := t.TempDir()
	srvCert := ca.Issue(t, testpki.Spec{CN: "federation.east.test", DNS: []string{"federation.east.test"}, URIs: []string{"spiffe://east.test/meshfed/federation"}}).TLS()
	gw := ca.Issue(t, testpki.Spec{CN: "gateway.east.test", DNS: []string{"gateway.east.test"}, URIs: []string{"spiffe://east.test/meshfed/gateway"}})
	caFile, otherCA := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "other.pem")
	testpki.Write(t, caFile, ca.CertPEM())
	testpki.Write(t, otherCA, other.CertPEM())
	certFile, keyFile := gw.WriteFiles(t, dir, "gw")
	pool := ca.Pool()

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
