package source_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/devca"
	"github.com/meshfed/meshfed/trust/internal/trusttest"
	"github.com/meshfed/meshfed/trust/source"
)

func bundleJSON(t *testing.T, seq uint64, roots ...*x509.Certificate) []byte {
	t.Helper()
	b, err := trust.Parse("a.example", trust.CertsPEM(roots), trust.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	j, err := b.WithMeta(seq, time.Minute).MarshalJWKS()
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func caFile(t *testing.T, srv *httptest.Server) string {
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestEndpointGuards: an https_web endpoint that answers 404 with {"keys":[]} (what
// go-spiffe's FetchBundle would take as an empty bundle), garbage, an empty bundle or a
// sequence going backwards is refused, and the last good bundle stays.
func TestEndpointGuards(t *testing.T) {
	r1, _, _ := devca.NewRoot("a.example", 24*time.Hour)
	r2, _, _ := devca.NewRoot("a.example", 24*time.Hour)
	var mu sync.Mutex
	status, body := 200, bundleJSON(t, 5, r1)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}))
	defer srv.Close()
	set := func(s int, b []byte) { mu.Lock(); status, body = s, b; mu.Unlock() }

	cfg, err := source.ParseEndpointSpec("a.example", srv.URL+"/bundle,profile=https_web,ca="+caFile(t, srv)+",refresh=1s")
	if err != nil {
		t.Fatal(err)
	}
	e, err := source.NewEndpoint(cfg, source.Options{Log: trusttest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	good, err := e.Fetch(ctx)
	if err != nil || good.Sequence != 5 {
		t.Fatalf("good fetch: %v", err)
	}
	cases := []struct {
		name   string
		status int
		body   []byte
		want   string
	}{
		{"404 with empty keys", 404, []byte(`{"keys":[]}`), "HTTP 404"},
		{"500", 500, []byte("oops"), "HTTP 500"},
		{"empty bundle", 200, []byte(`{"keys":[],"spiffe_sequence":9}`), "revoking"},
		{"garbage", 200, []byte("<html>"), "neither PEM"},
		{"sequence regression", 200, bundleJSON(t, 4, r2), "backwards"},
		{"same sequence other content", 200, bundleJSON(t, 5, r2), "stayed 5"},
	}
	for _, c := range cases {
		set(c.status, c.body)
		if _, err := e.Fetch(ctx); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: want error containing %q, got %v", c.name, c.want, err)
		}
	}
	// Run keeps the last good bundle through a bad answer and takes the next good one.
	set(404, []byte(`{"keys":[]}`))
	var got atomic.Pointer[trust.Bundle]
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go e.Run(rctx, func(b *trust.Bundle) { got.Store(b) })
	waitfor.Cond(t, 10*time.Second, func() bool { return e.Status().LastError != nil }, "the 404 is reported")
	if got.Load() != nil {
		t.Fatal("a 404 delivered a bundle")
	}
	set(200, bundleJSON(t, 6, r1, r2))
	waitfor.Cond(t, 10*time.Second, func() bool { b := got.Load(); return b != nil && b.Sequence == 6 }, "the next good bundle is delivered")
}

// TestEndpointSPIFFEProfile fetches a meshfed bundle endpoint with profile https_spiffe:
// the first fetch is authenticated by the operator-supplied bundle, the endpoint serves
// sequence and refresh hint, and an unknown trust domain is a plain 404.
func TestEndpointSPIFFEProfile(t *testing.T) {
	env := trusttest.NewEnv(t)
	a := env.StartCluster("a", "a.example", trusttest.ClusterOptions{Endpoint: true})
	waitfor.Cond(t, 20*time.Second, func() bool { return a.Svc.EndpointAddr() != "" && a.Has("a.example", 1) && a.Svc.Ready() == nil }, "endpoint up")
	roots, _ := a.CA(t).Roots()
	bundlePath := filepath.Join(t.TempDir(), "a.pem")
	if err := os.WriteFile(bundlePath, trust.CertsPEM(roots), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := "endpoint:https://" + a.Svc.EndpointAddr() + "/,profile=https_spiffe,id=spiffe://a.example/meshfed/bundle-endpoint,bundle=" + bundlePath
	src, err := source.Parse(spec, "a.example", source.Options{Log: trusttest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := src.(*source.Endpoint).Fetch(context.Background())
	if err != nil {
		t.Fatalf("fetch from meshfed's bundle endpoint: %v", err)
	}
	want, _ := a.Svc.Set().Get("a.example")
	if b.Digest() != want.Digest() || b.Sequence != want.Sequence || b.Sequence == 0 {
		t.Fatalf("endpoint served seq %d digest %s, want %d %s", b.Sequence, b.Digest(), want.Sequence, want.Digest())
	}
	// Wrong endpoint ID: refused by SPIFFE authentication.
	bad, _ := source.Parse(strings.Replace(spec, "meshfed/bundle-endpoint", "someone-else", 1), "a.example", source.Options{Log: trusttest.Quiet()})
	if _, err := bad.(*source.Endpoint).Fetch(context.Background()); err == nil {
		t.Fatal("an endpoint with another SPIFFE ID was accepted")
	}
	// An unknown trust domain is a 404 without a JSON body.
	tc := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // only checks the status code
	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: tc}}).Get("https://" + a.Svc.EndpointAddr() + "/nobody.example")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("unknown trust domain: HTTP %d", resp.StatusCode)
	}
}

func TestParseSpecs(t *testing.T) {
	bad := map[string]string{
		"nope:x":                          "use file:PATH",
		"file:":                           "file:PATH",
		"endpoint:http://x/":              "https",
		"endpoint:https://x/,profile=tcp": "profile=tcp",
		"endpoint:https://x/,profile=https_spiffe,bundle=/b": "needs id=",
		"endpoint:https://x/,refresh=1ms":                    "at least 1s",
		"endpoint:https://x/,colour=red":                     "known options",
	}
	for spec, want := range bad {
		if _, err := source.Parse(spec, "a.example", source.Options{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: want %q, got %v", spec, want, err)
		}
	}
	if _, err := source.Parse("dev", "a.example", source.Options{}); err == nil {
		t.Error("dev without a directory")
	}
	if _, err := source.Parse("workload:/run/spire/agent.sock", "a.example", source.Options{}); err != nil {
		t.Error(err)
	}
}

// fakeAgent is a SPIFFE Workload API server on a real unix socket (gRPC), standing in
// for a SPIRE agent, which cannot be built here without the SPIRE module tree (see
// docs/trust.md). It serves X.509 and JWT bundle streams and pushes updates.
type fakeAgent struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	mu      sync.Mutex
	bundles map[string][]byte
	updates chan struct{}
}

func (f *fakeAgent) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	if len(md.Get("workload.spiffe.io")) == 0 {
		return status.Error(3, "security header missing")
	}
	for {
		f.mu.Lock()
		resp := &workload.X509BundlesResponse{Bundles: map[string][]byte{}}
		for k, v := range f.bundles {
			resp.Bundles[k] = v
		}
		f.mu.Unlock()
		if err := stream.Send(resp); err != nil {
			return err
		}
		select {
		case <-f.updates:
		case <-stream.Context().Done():
			return nil
		}
	}
}

func derConcat(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}

func TestWorkloadSource(t *testing.T) {
	r1, _, _ := devca.NewRoot("a.example", 24*time.Hour)
	r2, _, _ := devca.NewRoot("a.example", 24*time.Hour)
	rb, _, _ := devca.NewRoot("b.example", 24*time.Hour)
	agent := &fakeAgent{bundles: map[string][]byte{"spiffe://a.example": derConcat(r1), "spiffe://b.example": derConcat(rb)}, updates: make(chan struct{}, 1)}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(gs, agent)
	go gs.Serve(ln)
	defer gs.Stop()

	src, err := source.Parse("workload:"+sock, "a.example", source.Options{Log: trusttest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	var got atomic.Pointer[trust.Bundle]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go src.Run(ctx, func(b *trust.Bundle) { got.Store(b) })
	waitfor.Cond(t, 10*time.Second, func() bool { b := got.Load(); return b != nil && len(b.X509Roots) == 1 && b.X509Roots[0].Equal(r1) }, "first bundle from the Workload API")
	agent.mu.Lock()
	agent.bundles["spiffe://a.example"] = derConcat(r1, r2)
	agent.mu.Unlock()
	agent.updates <- struct{}{}
	waitfor.Cond(t, 10*time.Second, func() bool { b := got.Load(); return b != nil && len(b.X509Roots) == 2 }, "the update is delivered")
	if b := got.Load(); b.TrustDomain.Name() != "a.example" {
		t.Fatal("took another trust domain's bundle")
	}
}
