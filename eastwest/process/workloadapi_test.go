package process_test

import (
	"bufio"
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"

	"github.com/meshfed/meshfed/eastwest"
	"github.com/meshfed/meshfed/eastwest/process"
	"github.com/meshfed/meshfed/internal/hbonetest"
	"github.com/meshfed/meshfed/trust/devca"
)

// fakeWorkloadAPI serves one X509SVIDResponse (the SVID, its trust domain's bundle and the
// federated bundles) and holds the stream, as a SPIRE agent does between rotations.
type fakeWorkloadAPI struct {
	workloadpb.UnimplementedSpiffeWorkloadAPIServer
	resp *workloadpb.X509SVIDResponse
}

func (f *fakeWorkloadAPI) FetchX509SVID(_ *workloadpb.X509SVIDRequest, s grpc.ServerStreamingServer[workloadpb.X509SVIDResponse]) error {
	if err := s.Send(f.resp); err != nil {
		return err
	}
	<-s.Context().Done()
	return nil
}

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
	key, err := x509.MarshalPKCS8PrivateKey(svid.Key)
	if err != nil {
		t.Fatal(err)
	}
	resp := &workloadpb.X509SVIDResponse{
		Svids:            []*workloadpb.X509SVID{{SpiffeId: gwID, X509Svid: svid.Chain[0].Raw, X509SvidKey: key, Bundle: roots["west.example"][0].Raw}},
		FederatedBundles: map[string][]byte{"spiffe://east.example": roots["east.example"][0].Raw},
	}
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	workloadpb.RegisterSpiffeWorkloadAPIServer(srv, &fakeWorkloadAPI{resp: resp})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)

	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	go func() {
		for {
			c, err := app.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				io.WriteString(c, "app got "+line)
			}()
		}
	}()
	_, appPort, _ := net.SplitHostPort(app.Addr().String())
	exports := filepath.Join(dir, "exports.yaml")
	os.WriteFile(exports, []byte("services:\n  - {name: echo, namespace: demo, ports: [{port: 8443}], endpoints: [{address: 127.0.0.1, hbonePort: "+appPort+"}]}\n"), 0o644)

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
