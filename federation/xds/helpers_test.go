package xds_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	grpcxds "google.golang.org/grpc/xds"

	"github.com/meshfed/meshfed/internal/faultproxy"
	"github.com/meshfed/meshfed/internal/testpki"
)

// TestMain re-executes the test binary with the grpc-go xDS features meshfed relies on
// switched on: grpc-go v1.85.0 reads them once, at package init, from the environment
// (internal/envconfig), exactly as a user's process would be started.
func TestMain(m *testing.M) {
	want := map[string]string{"GRPC_EXPERIMENTAL_XDS_SNI": "true", "GRPC_EXPERIMENTAL_XDS_MTLS_SPIFFE": "true"}
	missing := false
	for k, v := range want {
		if os.Getenv(k) != v {
			missing = true
			os.Setenv(k, v)
		}
	}
	if missing {
		exe, err := os.Executable()
		if err == nil {
			err = syscall.Exec(exe, os.Args, os.Environ())
		}
		fmt.Fprintf(os.Stderr, "re-exec with grpc xDS env vars: %v\n", err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// ---- PKI: one CA per trust domain, SPIFFE SVIDs, the files a gRPC bootstrap points at.

type testCA struct {
	td   string
	root *testpki.Cert
	cert *x509.Certificate
}

func newTestCA(t testing.TB, td string) *testCA {
	t.Helper()
	root := testpki.New(t, testpki.Spec{CN: td + " test CA", URIs: []string{"spiffe://" + td}, CA: true})
	return &testCA{td: td, root: root, cert: root.Cert}
}

// svid issues an X.509-SVID for spiffe://<td><path>, usable as client and server.
func (ca *testCA) svid(t testing.TB, path string) tls.Certificate {
	t.Helper()
	return ca.root.Issue(t, testpki.Spec{CN: path, URIs: []string{"spiffe://" + ca.td + path}}).TLS()
}

// clientFiles writes what a proxyless gRPC client's file_watcher provider reads: its SVID
// and key, the roots as PEM, and the SPIFFE bundle map.
type clientFiles struct{ cert, key, roots, bundleMap string }

func writeClientFiles(t testing.TB, dir string, id tls.Certificate, cas ...*testCA) clientFiles {
	t.Helper()
	f := clientFiles{cert: filepath.Join(dir, "cert.pem"), key: filepath.Join(dir, "key.pem"),
		roots: filepath.Join(dir, "roots.pem"), bundleMap: filepath.Join(dir, "bundles.json")}
	kb, err := x509.MarshalECPrivateKey(id.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	var roots bytes.Buffer
	bm := map[string]json.RawMessage{}
	for _, ca := range cas {
		pem.Encode(&roots, &pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
		b := spiffebundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString(ca.td), []*x509.Certificate{ca.cert})
		js, err := b.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		bm[ca.td] = js
	}
	bmJSON, _ := json.Marshal(map[string]any{"trust_domains": bm})
	for path, data := range map[string][]byte{
		f.cert:      pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: id.Certificate[0]}),
		f.key:       pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}),
		f.roots:     roots.Bytes(),
		f.bundleMap: bmJSON,
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// grpcBootstrap is the bootstrap a user writes for a proxyless gRPC client of cluster
// (docs/xds.md shows the same).
func grpcBootstrap(xdsAddr, nodeID, cluster string, f clientFiles) []byte {
	b := map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      xdsAddr,
			"channel_creds":   []any{map[string]any{"type": "insecure"}},
			"server_features": []any{"xds_v3"},
		}},
		"node": map[string]any{"id": nodeID, "cluster": cluster},
		"certificate_providers": map[string]any{
			"meshfed": map[string]any{"plugin_name": "file_watcher", "config": map[string]any{
				"certificate_file": f.cert, "private_key_file": f.key,
				"ca_certificate_file": f.roots, "spiffe_trust_bundle_map_file": f.bundleMap,
				"refresh_interval": "1s",
			}},
		},
	}
	js, _ := json.Marshal(b)
	return js
}

// xdsClient is a real grpc-go client on the xds:/// resolver with xDS credentials.
type xdsClient struct {
	cc *grpc.ClientConn
	hc healthpb.HealthClient
}

func newXDSClient(t testing.TB, bootstrap []byte, target string) *xdsClient {
	t.Helper()
	res, err := grpcxds.NewXDSResolverWithConfigForTesting(bootstrap)
	if err != nil {
		t.Fatalf("xds resolver: %v", err)
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(target, grpc.WithResolvers(res), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatalf("grpc client %s: %v", target, err)
	}
	t.Cleanup(func() { cc.Close() })
	return &xdsClient{cc: cc, hc: healthpb.NewHealthClient(cc)}
}

// callResult is one call: who answered (the peer's SPIFFE ID trust domain) and through
// which address.
type callResult struct {
	TrustDomain string
	SPIFFEID    string
	Peer        string
	Err         error
}

func (c *xdsClient) call(timeout time.Duration) callResult {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var p peer.Peer
	_, err := c.hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
	if err != nil {
		return callResult{Err: err}
	}
	r := callResult{}
	if p.Addr != nil {
		r.Peer = p.Addr.String()
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 && len(ti.State.PeerCertificates[0].URIs) > 0 {
		u := ti.State.PeerCertificates[0].URIs[0]
		r.SPIFFEID, r.TrustDomain = u.String(), u.Host
	} else {
		r.Err = fmt.Errorf("call answered without a TLS peer certificate (auth info %T)", p.AuthInfo)
	}
	return r
}

// grpcWorkload is a gRPC server with TLS (its SVID; client certificates required and
// verified against every trust domain given), serving the standard health service.
type grpcWorkload struct {
	addr string
	srv  *grpc.Server
}

func startGRPCWorkload(t testing.TB, addr string, id tls.Certificate, trust ...*testCA) *grpcWorkload {
	t.Helper()
	pool := x509.NewCertPool()
	for _, ca := range trust {
		pool.AddCert(ca.cert)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("workload listen %s: %v", addr, err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{id},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, MinVersion: tls.VersionTLS12})))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return &grpcWorkload{addr: ln.Addr().String(), srv: srv}
}

// ---- Network faults in front of a gateway.

// faultProxy is internal/faultproxy with the test's failure handling.
type faultProxy struct{ *faultproxy.Proxy }

func newFaultProxy(t testing.TB, listen, target string) *faultProxy {
	t.Helper()
	p, err := faultproxy.New(listen, target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return &faultProxy{p}
}

func (p *faultProxy) kill()      { p.Kill() }
func (p *faultProxy) blackhole() { p.Blackhole() }

func (p *faultProxy) restore(t testing.TB) {
	t.Helper()
	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
}

// ---- Logs: kept in memory, printed only when the test fails.

type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(b)
}

func testLogger(t testing.TB) *slog.Logger {
	lb := &logBuf{}
	t.Cleanup(func() {
		if t.Failed() {
			lb.mu.Lock()
			t.Log("logs:\n" + lb.buf.String())
			lb.mu.Unlock()
		}
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

var _ = io.Discard
var _ = errors.New
var _ = strings.Cut
