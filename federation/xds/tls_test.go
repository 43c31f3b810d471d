package xds_test

import (
	"crypto/x509"
	"encoding/json"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/meshfed/meshfed/federation/xds"
	"github.com/meshfed/meshfed/internal/testpki"
	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/view"
)

// TestXDSOverMTLS: the xDS listener with TLSFiles (what --xds-tls-cert/--xds-tls-key/
// --xds-tls-client-ca set up) serves a real grpc-go xDS client whose bootstrap uses the
// "tls" channel credentials with a client certificate, and the client's calls work; the
// same client with plaintext channel credentials gets nothing.
func TestXDSOverMTLS(t *testing.T) {
	ca := newTestCA(t, tdEast)
	wl := startGRPCWorkload(t, "127.0.0.1:0", ca.svid(t, "/ns/demo/sa/echo"), ca)
	dir := t.TempDir()

	// The federation's server certificate names "localhost" (what the bootstrap's
	// server_uri says); the client's xDS certificate is its SVID.
	srvCert, srvKey := ca.root.Issue(t, testpki.Spec{DNS: []string{"localhost"},
		EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}).WriteFiles(t, dir, "xds")
	files := writeClientFiles(t, dir, ca.svid(t, "/ns/demo/sa/client"), ca)

	tc, err := xds.TLSFiles{Cert: srvCert, Key: srvKey, ClientCA: files.roots}.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (xds.TLSFiles{Cert: srvCert, Key: filepath.Join(dir, "nope.pem")}).ServerConfig(); err == nil {
		t.Fatal("a missing key file was accepted at start")
	}
	s, _, _ := startServerWith(t, oneLocalService(t, wl.addr), xds.Options{Listen: "127.0.0.1:0", ServerTLS: tc})
	_, port, _ := net.SplitHostPort(s.Addr())

	boot := func(creds map[string]any) []byte {
		var b map[string]any
		if err := json.Unmarshal(grpcBootstrap("localhost:"+port, "east-client-1", "east", files), &b); err != nil {
			t.Fatal(err)
		}
		b["xds_servers"].([]any)[0].(map[string]any)["channel_creds"] = []any{creds}
		js, _ := json.Marshal(b)
		return js
	}
	c := newXDSClient(t, boot(map[string]any{"type": "tls", "config": map[string]any{
		"ca_certificate_file": files.roots, "certificate_file": files.cert, "private_key_file": files.key}}), target)
	var last callResult
	waitfor.Cond(t, 20*time.Second, func() bool { last = c.call(time.Second); return last.Err == nil },
		"a call through xDS over mTLS (last: %+v)", last)
	if last.SPIFFEID != "spiffe://"+tdEast+"/ns/demo/sa/echo" {
		t.Fatalf("answered by %+v", last)
	}

	plain := newXDSClient(t, boot(map[string]any{"type": "insecure"}), target)
	if r := plain.call(2 * time.Second); r.Err == nil {
		t.Fatalf("a plaintext xDS client resolved the service: %+v", r)
	}
}

// oneLocalService is a view where this cluster (east) exports demo/echo on port 8443 with
// one ready endpoint at addr.
func oneLocalService(t *testing.T, addr string) *view.View {
	host, p, _ := net.SplitHostPort(addr)
	tp, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	exp := &records.Export{Cluster: "east", Namespace: "demo", Name: "echo", Type: records.TypeClusterSetIP,
		Ports:     []records.Port{{Name: "grpc", Port: 8443, TargetPort: int32(tp), Protocol: "TCP", AppProtocol: "grpc"}},
		Endpoints: []records.Endpoint{{Address: host, Ready: true}}, Revision: 1, ExportedAt: t0, UpdatedAt: t0}
	return &view.View{Revision: 1,
		Clusters: map[string]*records.Cluster{"east": {Name: "east", Network: "n", Region: "r1", Zone: "r1a",
			TrustDomain: tdEast, Gateways: []string{"127.0.0.1:1"}, JoinedAt: t0}},
		Services: map[string]*view.Service{"demo/echo": view.Merge([]*view.ClusterExport{{Cluster: "east", Export: exp}})},
		Alive:    map[string]bool{"east": true}}
}
