package harness_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"github.com/meshfed/meshfed/eastwest"
	"github.com/meshfed/meshfed/eastwest/process"
	"github.com/meshfed/meshfed/eastwest/xdsroutes"
	"github.com/meshfed/meshfed/harness"
	"github.com/meshfed/meshfed/internal/bundlemap"
	"github.com/meshfed/meshfed/internal/hbonetest"
	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/trust/devca"
)

// TestSharedTrustDomainHBONE: two clusters of one mesh share the trust domain mesh.test
// and its root (west joined with --share-trust-domain-with east). East's federation alone
// publishes bundles/mesh.test; west's federation reads it and writes it to its bundle
// directory. West's gateway (routes from west's federation over xDS, HBONE callers
// verified against that bundle directory, narrowed to mesh.test, SVID
// spiffe://mesh.test/ns/istio-system/sa/meshfed-west-istio-remote) takes a double-HBONE
// tunnel from east's source "ztunnel" (an SVID of mesh.test, trusting east's bundle
// directory) to west's destination "ztunnel" in front of the app: the inner peer is the
// destination workload of the same trust domain.
func TestSharedTrustDomainHBONE(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := testLog(t)
	const td = "mesh.test"
	caDir := t.TempDir()
	ca, err := devca.Init(caDir, td, devca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	issue := func(id string) *devca.SVID {
		t.Helper()
		s, err := ca.Issue(devca.IssueRequest{ID: id})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// West's app behind its destination ztunnel (the endpoint's HBONE port).
	app, err := net.Listen("tcp", harness.WorkloadIP(1, 0)+":0")
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
				io.WriteString(c, "west app got "+line)
			}()
		}
	}()
	host, _, _ := net.SplitHostPort(app.Addr().String())

	f, err := harness.Start(ctx, harness.Options{Log: log, Trust: true, DevCADir: caDir, Clusters: []harness.ClusterSpec{
		{Name: "east", TrustDomain: td, NoGateway: true},
		{Name: "west", TrustDomain: td, ShareTrustDomainWith: "east", NoGateway: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	east, west := f.Cluster("east"), f.Cluster("west")
	for _, c := range []*harness.Cluster{east, west} {
		if err := c.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// One owner; the sharer reads, writes its bundle directory and acks.
	var bundle *store.Item[records.Bundle]
	waitfor.Cond(t, 20*time.Second, func() bool {
		bundle, err = store.Get[records.Bundle](ctx, east.Store, east.Store.KS.Bundle(td))
		if err != nil {
			return false
		}
		// An ack says the cluster's bundle directory holds the bundle (the clients below
		// load both directories once).
		for _, c := range []*harness.Cluster{east, west} {
			ack, err := store.Get[records.Ack](ctx, c.Store, c.Store.KS.Ack(c.Spec.Name, td))
			if err != nil || ack.Value.Sequence != bundle.Value.Sequence || ack.Value.Digest != bundle.Value.Digest {
				return false
			}
		}
		return true
	}, "east publishes %s, east and west ack it", td)
	if bundle.Value.Owner != "east" || bundle.Value.Sequence != 1 {
		t.Fatalf("bundles/%s: owner %s sequence %d, want east at 1", td, bundle.Value.Owner, bundle.Value.Sequence)
	}
	if st := west.Agent().Trust.PublishStatus(); st.Owner != "east" || st.SourceDiffers {
		t.Fatalf("west's publish status %+v", st)
	}

	destZ, err := hbonetest.StartZtunnel(host+":0", issue("spiffe://mesh.test/ns/demo/sa/echo").TLSCertificate(), mustBundles(t, west.BundleDir), func(string) string { return app.Addr().String() })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { destZ.Close() })
	_, zport, _ := net.SplitHostPort(destZ.Addr)
	if err := west.SetExports(fmt.Sprintf("services:\n  - {name: echo, namespace: demo, ports: [{name: tls, port: 8443}], endpoints: [{address: %s, hbonePort: %s}]}\n", host, zport)); err != nil {
		t.Fatal(err)
	}

	const gwID = "spiffe://mesh.test/ns/istio-system/sa/meshfed-west-istio-remote"
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "gw.pem"), filepath.Join(dir, "gw-key.pem")
	if err := issue(gwID).WriteFiles(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	p, err := process.Start(ctx, process.Config{
		Gateway:    eastwest.Config{Cluster: "west", Log: log, DrainTimeout: time.Second},
		Listen:     harness.ClusterIP(1) + ":0",
		Federation: &xdsroutes.Config{Address: west.XDSAddr, Host: "gw-west", BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond},
		HBONE: &process.HBONE{Listen: harness.ClusterIP(1) + ":0", CertFile: certFile, KeyFile: keyFile,
			BundleDir: west.BundleDir, AllowTrustDomains: []string{td}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })

	// East's source ztunnel: its workload's SVID of mesh.test, trusting what east's
	// federation wrote.
	client := issue("spiffe://mesh.test/ns/demo/sa/client").TLSCertificate()
	eastBundles := mustBundles(t, east.BundleDir)
	const authority = "echo.demo.svc.cluster.local:8443"
	var outerConn *hbonetest.Conn
	var outer *hbonetest.Stream
	if !waitfor.Poll(20*time.Second, func() bool {
		outerConn, outer, err = hbonetest.Dial(ctx, p.HBONEAddr(), authority, hbonetest.ClientTLS(client, eastBundles, gwID))
		return err == nil
	}) {
		t.Fatalf("west's gateway accepts no tunnel from a caller of the shared trust domain after 20s: %v", err)
	}
	defer outerConn.Close()
	innerConn, inner, err := hbonetest.DialInner(ctx, outer, authority, hbonetest.ClientTLS(client, eastBundles, "spiffe://mesh.test/ns/demo/sa/echo"))
	if err != nil {
		t.Fatalf("inner HBONE: %v", err)
	}
	defer innerConn.Close()
	if id, err := hbonetest.PeerID(innerConn.TLS); err != nil || id.String() != "spiffe://mesh.test/ns/demo/sa/echo" {
		t.Fatalf("inner peer %v %v", id, err)
	}
	io.WriteString(inner, "over shared-TD double HBONE\n")
	if got, _ := bufio.NewReader(inner).ReadString('\n'); got != "west app got over shared-TD double HBONE\n" {
		t.Fatalf("got %q", got)
	}
	// Still east's bundle, never rewritten by west.
	if it, err := store.Get[records.Bundle](ctx, east.Store, east.Store.KS.Bundle(td)); err != nil || it.ModRevision != bundle.ModRevision {
		t.Fatalf("bundles/%s rewritten: %+v %v", td, it, err)
	}
}

func mustBundles(t *testing.T, dir string) *x509bundle.Set {
	t.Helper()
	s, err := bundlemap.Load(filepath.Join(dir, bundlemap.FileName))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
