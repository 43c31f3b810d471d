package istio

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/federation/xds"
	"github.com/meshfed/meshfed/internal/istiotest"
	"github.com/meshfed/meshfed/internal/kubetest"
	"github.com/meshfed/meshfed/internal/testpki"
	"github.com/meshfed/meshfed/internal/waitfor"
)

// TestIstiodMCPTLS: the MCP listener serves TLS as `meshfed federation
// --istio-mcp-tls-cert/--istio-mcp-tls-key` makes it (xds.TLSFiles, the flags' code), and a
// real istiod runs with the settings `meshfed istio config --mcp-tls --mcp-ca-cert` makes
// (BuildSettings: the CA's PEM embedded in configSources[0].tlsSettings, mode SIMPLE).
//
//   - right CA: istiod connects over TLS, syncs every type, and its sidecar gets EDS in
//     meshfed's order; a plan change follows;
//   - wrong CA (a CA that did not sign the listener's certificate): the pinned istiod exits
//     at start ("MCP: failed running ... certificate signed by unknown authority"), within
//     the deadline, and the listener never sees a synced istiod.
func TestIstiodMCPTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kube-apiserver and istiod")
	}
	if istiotest.Binary() == "" {
		t.Skip(istiotest.SkipHint)
	}
	dir := t.TempDir()
	ca := testpki.New(t, testpki.Spec{CN: "meshfed MCP test CA", CA: true})
	// istiod dials xds://127.0.0.1:PORT with no SNI setting: gRPC verifies the host of the
	// address, so the certificate names 127.0.0.1 (in a cluster: meshfed-istio.<ns>.svc).
	leaf := ca.Issue(t, testpki.Spec{CN: "meshfed-istio", DNS: []string{"meshfed-istio.meshfed-system.svc"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	certFile, keyFile := leaf.WriteFiles(t, dir, "mcp")
	serverTLS, err := xds.TLSFiles{Cert: certFile, Key: keyFile}.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := startServer(t, Options{ServerTLS: serverTLS})
	src := NewSource(srv, BuildOptions{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	go func() { _ = src.Run(ctx) }()
	src.Update(map[string]*Service{"demo/echo": echoPlan(
		gw("west", "r1", "r1-b", 2, "127.0.0.21", "127.0.0.22"),
		gw("north", "r2", "r2-a", 3, "127.0.0.31"),
	)})
	waitState(t, srv)
	api := kubetest.Start(t)

	meshConfig := func(caPEM []byte) ([]byte, map[string]string) {
		t.Helper()
		st, err := BuildSettings(SettingsInput{Cluster: "east", MCPAddress: srv.Addr(), MCPTLS: true, MCPCAPEM: string(caPEM), TrustDomain: "east.example"})
		if err != nil {
			t.Fatal(err)
		}
		y, err := st.MeshConfigYAML()
		if err != nil {
			t.Fatal(err)
		}
		return y, st.Env
	}

	t.Run("wrong-ca", func(t *testing.T) {
		other := testpki.New(t, testpki.Spec{CN: "another CA", CA: true})
		mesh, env := meshConfig(other.CertPEM())
		start := time.Now()
		ist, err := istiotest.Launch(ctx, istiotest.Config{APIServer: api, ClusterID: "east", MeshConfig: mesh, Env: env,
			PodName: "istiod-wrong-ca", StartTimeout: 90 * time.Second})
		if ist != nil {
			defer ist.Close()
		}
		took := time.Since(start)
		if err == nil {
			t.Fatalf("istiod became ready with a CA that did not sign the MCP listener's certificate")
		}
		log := ""
		if ist != nil {
			log = ist.LogTail(40)
		}
		if !strings.Contains(err.Error(), "istiod exited before /ready") {
			t.Fatalf("want istiod to exit at start, got: %v", err)
		}
		if !strings.Contains(log, "MCP: failed running") || !strings.Contains(log, "certificate signed by unknown authority") {
			t.Errorf("istiod's log does not name the MCP TLS failure:\n%s", log)
		}
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, "MCP: failed running") {
				t.Logf("istiod: %s", l)
			}
		}
		t.Logf("wrong CA: istiod exited %v after launch", took.Round(time.Millisecond))
		for _, c := range srv.Status() {
			if c.Synced {
				t.Errorf("an istiod synced with the wrong CA: %+v", c)
			}
		}
	})

	t.Run("right-ca", func(t *testing.T) {
		mesh, env := meshConfig(ca.CertPEM())
		if !strings.Contains(string(mesh), "BEGIN CERTIFICATE") || !strings.Contains(string(mesh), "mode: SIMPLE") {
			t.Fatalf("mesh config without the embedded CA:\n%s", mesh)
		}
		ist := istiotest.Start(t, istiotest.Config{APIServer: api, ClusterID: "east", MeshConfig: mesh, Env: env})
		logTLS, _ := os.ReadFile(filepath.Join(ist.Dir, "istiod.log"))
		if !strings.Contains(string(logTLS), "Started XDS configSource xds://"+srv.Addr()) {
			t.Errorf("istiod's log does not say it started the xds:// source")
		}
		sc := eastClient(t, ist.XDSAddr, 0)
		west1 := istiotest.Endpoint{Priority: 0, Locality: "r1/r1-b/west", Address: "127.0.0.21:15443", Weight: 2}
		west2 := istiotest.Endpoint{Priority: 0, Locality: "r1/r1-b/west", Address: "127.0.0.22:15443", Weight: 2}
		north := istiotest.Endpoint{Priority: 1, Locality: "r2/r2-a/north", Address: "127.0.0.31:15443", Weight: 3}
		want := echoEDSIs
		snap, took, err := sc.WaitFor(60*time.Second, want(west1, west2, north))
		if err != nil {
			t.Fatalf("EDS over MCP/TLS: %v\ngot %v\nistiod: %s", err, istiotest.Flatten(snap.Endpoints[echoCluster]), ist.LogTail(30))
		}
		t.Logf("MCP over TLS: istiod ready %v after launch; first EDS %v after the sidecar connected", ist.ReadyDuration.Round(time.Millisecond), took.Round(time.Millisecond))
		waitfor.Cond(t, 30*time.Second, func() bool {
			for _, c := range srv.Status() {
				if c.Synced && !c.Relay {
					return true
				}
			}
			return false
		}, "istiod synced over TLS: %+v", srv.Status())

		src.Update(map[string]*Service{"demo/echo": echoPlan(
			gw("north", "r2", "r2-a", 3, "127.0.0.31"),
			gw("west", "r1", "r1-b", 2, "127.0.0.21", "127.0.0.22"),
		)})
		north.Priority, west1.Priority, west2.Priority = 0, 1, 1
		if snap, took, err = sc.WaitFor(30*time.Second, want(north, west1, west2)); err != nil {
			t.Fatalf("reorder over TLS: %v; got %v", err, istiotest.Flatten(snap.Endpoints[echoCluster]))
		}
		t.Logf("MCP over TLS: plan change at the sidecar in %v", took.Round(time.Millisecond))
	})
}
