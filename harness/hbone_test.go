package harness_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/eastwest"
	"github.com/meshfed/meshfed/eastwest/process"
	"github.com/meshfed/meshfed/eastwest/xdsroutes"
	"github.com/meshfed/meshfed/harness"
	"github.com/meshfed/meshfed/internal/bundlemap"
	"github.com/meshfed/meshfed/internal/hbonetest"
	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/devca"
)

// TestGatewayHBONEAndSNIFromFederationXDS: one gateway process with both listeners takes
// its routes from its federation's xDS; the export's hbonePort reaches it through the
// keyspace, the import view and the gateway contract's EDS. A TLS client is routed by SNI
// to the workload, an HBONE client (SVID of a federated trust domain) is tunnelled to the
// endpoint's HBONE port; when the export drops the HBONE port, tunnels are refused (503)
// while SNI still routes.
func TestGatewayHBONEAndSNIFromFederationXDS(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := testLog(t)
	wl, err := harness.StartWorkload("west", "echo-0", harness.WorkloadIP(0, 0)+":0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wl.Close)
	host, wport, _ := net.SplitHostPort(wl.Addr)
	// What sits at the endpoint's HBONE port: an app answering one line (a real ztunnel
	// would be there; eastwest's tests run the double-HBONE case).
	hb, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hb.Close() })
	go func() {
		for {
			c, err := hb.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				io.WriteString(c, "hbone endpoint got "+line)
			}()
		}
	}()
	_, hport, _ := net.SplitHostPort(hb.Addr().String())
	exportsWith := func(hbonePort string) string {
		return fmt.Sprintf("services:\n  - {name: echo, namespace: demo, ports: [{name: tls, port: 8443, targetPort: %s}], endpoints: [{address: %s%s}]}\n", wport, host, hbonePort)
	}
	f, err := harness.Start(ctx, harness.Options{Log: log, Clusters: []harness.ClusterSpec{
		{Name: "west", NoGateway: true, Exports: exportsWith(", hbonePort: " + hport)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	west := f.Cluster("west")

	// Trust: east and west federated, as the federation writes them to --bundle-dir.
	dir := t.TempDir()
	cas := map[string]*devca.CA{}
	var bundles []*trust.Bundle
	for _, td := range []string{"east.example", "west.example"} {
		ca, err := devca.Init(filepath.Join(dir, td), td, devca.Options{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := ca.Bundle(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		cas[td], bundles = ca, append(bundles, b)
	}
	bundleDir := filepath.Join(dir, "bundles")
	if err := os.MkdirAll(bundleDir, 0o755); err != nil {
		t.Fatal(err)
	}
	bm, _ := trust.NewSet(bundles...).BundleMapJSON()
	if err := os.WriteFile(filepath.Join(bundleDir, bundlemap.FileName), bm, 0o644); err != nil {
		t.Fatal(err)
	}
	const gwID = "spiffe://west.example/ns/meshfed/sa/gateway"
	gwSVID, err := cas["west.example"].Issue(devca.IssueRequest{ID: gwID})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "gw.pem"), filepath.Join(dir, "gw-key.pem")
	if err := gwSVID.WriteFiles(certFile, keyFile); err != nil {
		t.Fatal(err)
	}

	p, err := process.Start(ctx, process.Config{
		Gateway:    eastwest.Config{Cluster: "west", Log: log, DrainTimeout: time.Second},
		Listen:     harness.ClusterIP(0) + ":0",
		Federation: &xdsroutes.Config{Address: west.XDSAddr, Host: "gw-0", BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond},
		HBONE:      &process.HBONE{Listen: harness.ClusterIP(0) + ":0", CertFile: certFile, KeyFile: keyFile, BundleDir: bundleDir},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })

	// SNI.
	if who, err := callEcho(p.Addr(), names.ServiceSNI("demo", "echo", 8443)); err != nil || who != "west/echo-0" {
		t.Fatalf("SNI path: %s, %v", who, err)
	}
	// HBONE.
	client, err := cas["east.example"].Issue(devca.IssueRequest{ID: "spiffe://east.example/ns/demo/sa/client"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := hbonetest.ClientTLS(client.TLSCertificate(), x509bundle.NewSet(bundles[0].X509Bundle(), bundles[1].X509Bundle()), gwID)
	const authority = "echo.demo.svc.cluster.local:8443"
	c, s, err := hbonetest.Dial(ctx, p.HBONEAddr(), authority, cfg)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(s, "hi\n")
	if got, _ := bufio.NewReader(s).ReadString('\n'); got != "hbone endpoint got hi\n" {
		t.Fatalf("HBONE path: %q", got)
	}
	c.Close()

	// The export drops its HBONE port: the federation tells the gateway, tunnels are
	// refused, SNI goes on.
	if err := west.SetExports(exportsWith("")); err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 20*time.Second, func() bool {
		c, s, err := hbonetest.Dial(ctx, p.HBONEAddr(), authority, cfg)
		if err == nil {
			s.Close()
			c.Close()
			return false
		}
		var se *hbonetest.StatusError
		return errors.As(err, &se) && se.Code == http.StatusServiceUnavailable
	}, "tunnels refused once the endpoint has no HBONE port")
	if who, err := callEcho(p.Addr(), names.ServiceSNI("demo", "echo", 8443)); err != nil || who != "west/echo-0" {
		t.Fatalf("SNI path after the change: %s, %v", who, err)
	}
}
