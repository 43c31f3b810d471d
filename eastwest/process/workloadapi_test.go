package process_test

import (
	"bufio"
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"github.com/meshfed/meshfed/eastwest"
	"github.com/meshfed/meshfed/eastwest/process"
	"github.com/meshfed/meshfed/internal/hbonetest"
	"github.com/meshfed/meshfed/internal/workloadapitest"
	"github.com/meshfed/meshfed/trust/devca"
)

// TestHBONEFromWorkloadAPI: the gateway's SVID and the federated bundles come from the
// SPIFFE Workload API (--spiffe-socket, no --bundle-dir).
func TestHBONEFromWorkloadAPI(t *testing.T) {
	dir := t.TempDir()
	ca := map[string]*devca.CA{}
	roots := map[string][]*x509.Certificate{}
	for _, td := range []string{"east.example", "west.example"} {
		c, err := devca.Init(filepath.Join(dir, td), td, devca.Options{})
		if err != nil {
			t.Fatal(err)
		}
		r, err := c.Roots()
		if err != nil {
			t.Fatal(err)
		}
		ca[td], roots[td] = c, r
	}
	const gwID = "spiffe://west.example/ns/meshfed/sa/gateway"
	svid, err := ca["west.example"].Issue(devca.IssueRequest{ID: gwID})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := workloadapitest.Response(gwID, svid.Chain[:1], svid.Key, roots["west.example"], map[string][]*x509.Certificate{"east.example": roots["east.example"]})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	agent, err := workloadapitest.Start(sock, resp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(agent.Close)

	appAddr := startLineApp(t) // answers one line ("app got ..."), then closes
	exports := writeHBONEExports(t, dir, appAddr)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := process.Start(ctx, process.Config{
		Gateway: eastwest.Config{Cluster: "west", Log: slog.New(slog.NewTextHandler(io.Discard, nil))},
		Listen:  "127.0.0.1:0", Exports: exports,
		HBONE: &process.HBONE{Listen: "127.0.0.1:0", SPIFFESocket: sock},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	client, err := ca["east.example"].Issue(devca.IssueRequest{ID: "spiffe://east.example/ns/demo/sa/client"})
	if err != nil {
		t.Fatal(err)
	}
	set := x509bundle.NewSet(x509bundle.FromX509Authorities(ca["east.example"].TrustDomain(), roots["east.example"]),
		x509bundle.FromX509Authorities(ca["west.example"].TrustDomain(), roots["west.example"]))
	c, s, err := hbonetest.Dial(ctx, p.HBONEAddr(), "echo.demo.svc.cluster.local:8443", hbonetest.ClientTLS(client.TLSCertificate(), set, gwID))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(s, "hi\n")
	if got, _ := bufio.NewReader(s).ReadString('\n'); got != "app got hi\n" {
		t.Fatalf("through the HBONE listener: %q", got)
	}
}
