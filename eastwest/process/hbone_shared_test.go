package process_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"github.com/meshfed/meshfed/eastwest"
	"github.com/meshfed/meshfed/eastwest/process"
	"github.com/meshfed/meshfed/internal/bundlemap"
	"github.com/meshfed/meshfed/internal/hbonetest"
	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/devca"
)

// TestHBONESharedTrustDomain: clusters of one Istio mesh that share one trust domain
// and root (join --share-trust-domain-with). West's gateway process holds an SVID of the
// shared trust domain with the SPIFFE ID ztunnel expects of an istio-remote gateway
// (spiffe://TD/ns/<Gateway namespace>/sa/meshfed-<cluster>-istio-remote), reads the
// federated bundles from a bundle directory as the federation writes it (the shared trust
// domain once, and one other), and narrows callers to the shared trust domain. A source
// ztunnel of the same trust domain (another cluster, same root) is accepted, and double
// HBONE reaches the destination ztunnel, whose inner peer is the destination workload of
// the same trust domain. A caller of the other (federated, not allowed) trust domain is
// refused, and so is one claiming the shared trust domain under another root.
func TestHBONESharedTrustDomain(t *testing.T) {
	dir := t.TempDir()
	const td = "mesh.example"
	mesh, err := devca.Init(filepath.Join(dir, "mesh"), td, devca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := devca.Init(filepath.Join(dir, "other"), "other.example", devca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := devca.Init(filepath.Join(dir, "rogue"), td, devca.Options{}) // same name, another root
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := mesh.Bundle(time.Now())
	ob, _ := other.Bundle(time.Now())
	bundleDir := filepath.Join(dir, "bundles")
	os.MkdirAll(bundleDir, 0o755)
	bm, err := trust.NewSet(mb, ob).BundleMapJSON()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundleDir, bundlemap.FileName), bm, 0o644); err != nil {
		t.Fatal(err)
	}
	issue := func(ca *devca.CA, id string) *devca.SVID {
		t.Helper()
		s, err := ca.Issue(devca.IssueRequest{ID: id})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	const gatewayID = "spiffe://mesh.example/ns/istio-system/sa/meshfed-west-istio-remote"
	certFile, keyFile := filepath.Join(dir, "gw.pem"), filepath.Join(dir, "gw-key.pem")
	if err := issue(mesh, gatewayID).WriteFiles(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	appAddr := startLineApp(t) // answers one line ("app got ..."), then closes
	meshOnly := x509bundle.NewSet(mb.X509Bundle())
	const echoID = "spiffe://mesh.example/ns/demo/sa/echo"
	z, err := hbonetest.StartZtunnel("127.0.0.1:0", issue(mesh, echoID).TLSCertificate(), meshOnly, func(string) string { return appAddr })
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	exports := writeHBONEExports(t, dir, z.Addr)

	p, err := process.Start(context.Background(), process.Config{
		Gateway: eastwest.Config{Cluster: "west", Log: slog.New(slog.NewTextHandler(io.Discard, nil))},
		Listen:  "127.0.0.1:0", Admin: "127.0.0.1:0", Exports: exports,
		HBONE: &process.HBONE{Listen: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile, BundleDir: bundleDir, AllowTrustDomains: []string{td}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const authority = "echo.demo.svc.cluster.local:8443"
	ctx := context.Background()

	// East's source ztunnel: an SVID of the shared trust domain, verifying the gateway's
	// exact SPIFFE ID as ztunnel does.
	client := issue(mesh, "spiffe://mesh.example/ns/demo/sa/client").TLSCertificate()
	outerConn, outer, err := hbonetest.Dial(ctx, p.HBONEAddr(), authority, hbonetest.ClientTLS(client, meshOnly, gatewayID))
	if err != nil {
		t.Fatalf("a caller of the gateway's own (shared) trust domain: %v", err)
	}
	defer outerConn.Close()
	innerConn, inner, err := hbonetest.DialInner(ctx, outer, authority, hbonetest.ClientTLS(client, meshOnly, echoID))
	if err != nil {
		t.Fatalf("inner HBONE to the destination ztunnel: %v", err)
	}
	defer innerConn.Close()
	if id, err := hbonetest.PeerID(innerConn.TLS); err != nil || id.String() != echoID {
		t.Fatalf("inner peer %v %v, want the destination workload %s", id, err, echoID)
	}
	io.WriteString(inner, "shared\n")
	if got, _ := bufio.NewReader(inner).ReadString('\n'); got != "app got shared\n" {
		t.Fatalf("through double HBONE: %q", got)
	}

	// Refused at the handshake: a federated but not allowed trust domain, and the shared
	// trust domain's name under a root the bundle map does not hold.
	for name, cert := range map[string]*devca.SVID{
		"other.example (federated, not allowed)": issue(other, "spiffe://other.example/ns/demo/sa/client"),
		"mesh.example under another root":        issue(rogue, "spiffe://mesh.example/ns/demo/sa/client"),
	} {
		c, s, err := hbonetest.Dial(ctx, p.HBONEAddr(), authority, hbonetest.ClientTLS(cert.TLSCertificate(), meshOnly, gatewayID))
		if err == nil {
			io.WriteString(s, "x\n")
			got, _ := bufio.NewReader(s).ReadString('\n')
			c.Close()
			t.Errorf("%s: tunnel opened (%q)", name, got)
		}
	}
	waitfor.Cond(t, 10*time.Second, func() bool {
		_, body := get(t, "http://"+p.AdminAddr()+"/metrics")
		return strings.Contains(body, `meshfed_gateway_rejected_total{protocol="hbone",reason="untrusted_client"} 2`)
	}, "both refusals counted as untrusted_client")
	if a := z.Authorities(); len(a) != 1 {
		t.Fatalf("destination ztunnel saw %v, want the one allowed tunnel", a)
	}
}
