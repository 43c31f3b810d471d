package process_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
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
	"github.com/meshfed/meshfed/internal/healthprobe"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/devca"
)

// TestHBONEFromFiles: a process with both listeners, its SVID from files and the
// federated bundles from a bundle directory as the federation writes it, tunnels to an
// endpoint's HBONE port and still answers its health name on the SNI listener.
func TestHBONEFromFiles(t *testing.T) {
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
	os.MkdirAll(bundleDir, 0o755)
	bm, err := trust.NewSet(bundles...).BundleMapJSON()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundleDir, bundlemap.FileName), bm, 0o644); err != nil {
		t.Fatal(err)
	}
	gwSVID, err := cas["west.example"].Issue(devca.IssueRequest{ID: "spiffe://west.example/ns/meshfed/sa/gateway"})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "gw.pem"), filepath.Join(dir, "gw-key.pem")
	if err := gwSVID.WriteFiles(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	appAddr := startLineApp(t) // answers one line ("app got ..."), then closes
	exports := writeHBONEExports(t, dir, appAddr)

	p, err := process.Start(context.Background(), process.Config{
		Gateway: eastwest.Config{Cluster: "west", Log: slog.New(slog.NewTextHandler(io.Discard, nil))},
		Listen:  "127.0.0.1:0", Admin: "127.0.0.1:0", Exports: exports,
		HBONE: &process.HBONE{Listen: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile, BundleDir: bundleDir},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	client, err := cas["east.example"].Issue(devca.IssueRequest{ID: "spiffe://east.example/ns/demo/sa/client"})
	if err != nil {
		t.Fatal(err)
	}
	set := x509bundle.NewSet(bundles[0].X509Bundle(), bundles[1].X509Bundle())
	c, s, err := hbonetest.Dial(context.Background(), p.HBONEAddr(), "echo.demo.svc.cluster.local:8443",
		hbonetest.ClientTLS(client.TLSCertificate(), set, "spiffe://west.example/ns/meshfed/sa/gateway"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(s, "hi\n")
	if got, _ := bufio.NewReader(s).ReadString('\n'); got != "app got hi\n" {
		t.Fatalf("through the HBONE listener: %q", got)
	}
	if r := healthprobe.Probe(context.Background(), "", p.Addr(), nil); !r.OK {
		t.Fatalf("health on the SNI listener: %v (%q)", r.Err, r.Text)
	}
	if _, body := get(t, "http://"+p.AdminAddr()+"/metrics"); !strings.Contains(body, `meshfed_cert_expiry_seconds{cert="gateway-hbone"`) {
		t.Fatal("the HBONE certificate's expiry is not exported")
	}
}

func TestHBONEErrorsNameThePart(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	exports := filepath.Join(t.TempDir(), "exports.yaml")
	os.WriteFile(exports, []byte("services: []\n"), 0o644)
	for _, tc := range []struct {
		h    process.HBONE
		part process.Part
	}{
		{process.HBONE{Listen: "127.0.0.1:0", BundleDir: "/nonexistent"}, process.PartHBONECert},
		{process.HBONE{Listen: "127.0.0.1:0", CertFile: "/nonexistent.pem"}, process.PartHBONECert},
		{process.HBONE{Listen: "127.0.0.1:0", CertFile: "/nonexistent.pem", KeyFile: "/nonexistent.key", BundleDir: "/nonexistent"}, process.PartHBONECert},
		{process.HBONE{Listen: "127.0.0.1:0", CertFile: "/nonexistent.pem", KeyFile: "/nonexistent.key"}, process.PartHBONEBundles},
	} {
		h := tc.h
		_, err := process.Start(context.Background(), process.Config{Gateway: eastwest.Config{Log: log}, Listen: "127.0.0.1:0", Exports: exports, HBONE: &h})
		var pe *process.Error
		if !errors.As(err, &pe) || pe.Part != tc.part {
			t.Errorf("HBONE %+v: %v, want an error about the %s", tc.h, err, tc.part)
		}
	}
}

// startLineApp starts the app behind an HBONE endpoint: it answers one line with
// "app got <line>" and closes. It returns the app's address.
func startLineApp(t *testing.T) string {
	t.Helper()
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
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
	return app.Addr().String()
}

// writeHBONEExports writes an exports file in dir: demo/echo port 8443 with one endpoint
// on 127.0.0.1 whose HBONE port is hboneAddr's port. It returns the file's path.
func writeHBONEExports(t *testing.T, dir, hboneAddr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(hboneAddr)
	if err != nil {
		t.Fatal(err)
	}
	exports := filepath.Join(dir, "exports.yaml")
	if err := os.WriteFile(exports, []byte("services:\n  - {name: echo, namespace: demo, ports: [{port: 8443}], endpoints: [{address: 127.0.0.1, hbonePort: "+port+"}]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return exports
}
