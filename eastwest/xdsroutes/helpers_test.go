package xdsroutes_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/eastwest"
	"github.com/meshfed/meshfed/eastwest/internal/tlstest"
	"github.com/meshfed/meshfed/eastwest/xdsroutes"
	"github.com/meshfed/meshfed/internal/waitfor"
)

// controlPlane is a real go-control-plane xDS server (pkg/server/v3 over linear caches,
// the same building blocks as the federation's) serving the gateway contract: inbound
// CDS clusters and their EDS assignments. It records every request it receives and can
// be stopped and started again on the same address.
type controlPlane struct {
	t        *testing.T
	cds, eds *cachev3.LinearCache
	cache    cachev3.Cache
	addr     string

	mu        sync.Mutex
	reqs      []*discoveryv3.DiscoveryRequest
	reqStream []int64 // stream of each request (nonces are per stream)
	resps     []sentResponse
	streams   int64       // stream ids of earlier server runs are offset by this
	tls       *tls.Config // serves TLS when set
	gs        *grpc.Server
	done      chan struct{}
}

func newControlPlane(t *testing.T) *controlPlane {
	t.Helper()
	c := &controlPlane{t: t,
		cds: cachev3.NewLinearCache(resourcev3.ClusterType, cachev3.WithVersionPrefix("c-")),
		eds: cachev3.NewLinearCache(resourcev3.EndpointType, cachev3.WithVersionPrefix("e-")),
	}
	c.cache = &cachev3.MuxCache{
		Classify: func(r *cachev3.Request) string { return r.GetTypeUrl() },
		Caches:   map[string]cachev3.Cache{resourcev3.ClusterType: c.cds, resourcev3.EndpointType: c.eds},
	}
	t.Cleanup(c.stop)
	return c
}

// snapshotControlPlane serves from a snapshot cache instead (EDS answers carry every
// requested assignment, not only the changed ones).
func snapshotControlPlane(t *testing.T, sc cachev3.SnapshotCache) *controlPlane {
	c := &controlPlane{t: t, cache: sc}
	t.Cleanup(c.stop)
	return c
}

func (c *controlPlane) start() {
	c.t.Helper()
	addr := c.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		c.t.Fatalf("control plane listen %s: %v", addr, err)
	}
	c.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	// Each server run numbers its streams from 1: make them unique over restarts.
	c.mu.Lock()
	c.streams += 1 << 20
	base := c.streams
	c.mu.Unlock()
	xs := serverv3.NewServer(ctx, c.cache, serverv3.CallbackFuncs{
		StreamRequestFunc: func(id int64, r *discoveryv3.DiscoveryRequest) error {
			c.mu.Lock()
			c.reqs = append(c.reqs, proto.Clone(r).(*discoveryv3.DiscoveryRequest))
			c.reqStream = append(c.reqStream, base+id)
			c.mu.Unlock()
			return nil
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
			c.mu.Lock()
			c.resps = append(c.resps, sentResponse{base + id, resp.GetTypeUrl(), resp.GetVersionInfo(), resp.GetNonce(), resourceNames(resp)})
			c.mu.Unlock()
		},
	})
	var opts []grpc.ServerOption
	if c.tls != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(c.tls)))
	}
	gs := grpc.NewServer(opts...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, xs)
	done := make(chan struct{})
	go func() { _ = gs.Serve(ln); cancel(); close(done) }()
	c.mu.Lock()
	c.gs, c.done = gs, done
	c.mu.Unlock()
}

// stop kills the server: streams end at once, as when the federation process dies.
func (c *controlPlane) stop() {
	c.mu.Lock()
	gs, done := c.gs, c.done
	c.gs = nil
	c.mu.Unlock()
	if gs != nil {
		gs.Stop()
		<-done
	}
}

func (c *controlPlane) requests() []*discoveryv3.DiscoveryRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*discoveryv3.DiscoveryRequest(nil), c.reqs...)
}

// nacks are the requests carrying an error_detail for typeURL.
func (c *controlPlane) nacks(typeURL string) []*discoveryv3.DiscoveryRequest {
	var out []*discoveryv3.DiscoveryRequest
	for _, r := range c.requests() {
		if r.GetTypeUrl() == typeURL && r.GetErrorDetail() != nil {
			out = append(out, r)
		}
	}
	return out
}

// mark counts the responses sent so far: answered looks only at later ones.
func (c *controlPlane) mark() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.resps)
}

// answered reports whether the client has answered a response sent after mark that
// carried the named resource of typeURL: with an ACK (ack true) or a NACK (ack false).
// The source publishes its table before it answers, so after this the table reflects
// that response.
func (c *controlPlane) answered(mark int, typeURL, name string, ack bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	type ref struct {
		stream int64
		nonce  string
	}
	sent := map[ref]bool{}
	for _, r := range c.resps[min(mark, len(c.resps)):] {
		if r.typeURL == typeURL && slices.Contains(r.names, name) {
			sent[ref{r.stream, r.nonce}] = true
		}
	}
	for i, r := range c.reqs {
		if r.GetTypeUrl() == typeURL && sent[ref{c.reqStream[i], r.GetResponseNonce()}] && (r.GetErrorDetail() == nil) == ack {
			return true
		}
	}
	return false
}

type sentResponse struct {
	stream                  int64
	typeURL, version, nonce string
	names                   []string
}

func resourceNames(resp *discoveryv3.DiscoveryResponse) []string {
	var out []string
	for _, a := range resp.GetResources() {
		switch a.GetTypeUrl() {
		case resourcev3.ClusterType:
			var c clusterv3.Cluster
			if a.UnmarshalTo(&c) == nil {
				out = append(out, c.GetName())
			}
		case resourcev3.EndpointType:
			var e endpointv3.ClusterLoadAssignment
			if a.UnmarshalTo(&e) == nil {
				out = append(out, e.GetClusterName())
			}
		}
	}
	return out
}

var ads = &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	ResourceApiVersion: corev3.ApiVersion_V3}

func inboundName(ns, name string, port uint32) string {
	return names.InboundClusterName(ns, name, port, "")
}

// inboundCluster is the contract's CDS cluster for a service port.
func inboundCluster(ns, name string, port uint32) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 inboundName(ns, name, port),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads},
		ConnectTimeout:       durationpb.New(2 * time.Second),
	}
}

// ep describes one LbEndpoint.
type ep struct {
	addr     string // ip:port
	zone     string
	health   corev3.HealthStatus
	weight   uint32
	priority uint32
}

func cla(name string, eps ...ep) *endpointv3.ClusterLoadAssignment {
	out := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	for _, e := range eps {
		host, p, _ := net.SplitHostPort(e.addr)
		port, _ := strconv.Atoi(p)
		lb := &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
				Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: host,
					PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}}}},
			HealthStatus: e.health,
		}
		if e.weight > 0 {
			lb.LoadBalancingWeight = wrapperspb.UInt32(e.weight)
		}
		out.Endpoints = append(out.Endpoints, &endpointv3.LocalityLbEndpoints{
			Locality:    &corev3.Locality{Region: "r1", Zone: e.zone, SubZone: "east"},
			LbEndpoints: []*endpointv3.LbEndpoint{lb}, Priority: e.priority,
		})
	}
	return out
}

func (c *controlPlane) setCluster(cl *clusterv3.Cluster) {
	c.t.Helper()
	if err := c.cds.UpdateResource(cl.GetName(), cl); err != nil {
		c.t.Fatal(err)
	}
}

func (c *controlPlane) delCluster(name string) {
	c.t.Helper()
	if err := c.cds.DeleteResource(name); err != nil {
		c.t.Fatal(err)
	}
}

func (c *controlPlane) setCLA(a *endpointv3.ClusterLoadAssignment) {
	c.t.Helper()
	if err := c.eds.UpdateResource(a.GetClusterName(), a); err != nil {
		c.t.Fatal(err)
	}
}

// setAll replaces both caches in one go per cache.
func (c *controlPlane) setAll(clusters []*clusterv3.Cluster, clas []*endpointv3.ClusterLoadAssignment) {
	cm := map[string]types.Resource{}
	for _, cl := range clusters {
		cm[cl.GetName()] = cl
	}
	em := map[string]types.Resource{}
	for _, a := range clas {
		em[a.GetClusterName()] = a
	}
	c.eds.SetResources(em)
	c.cds.SetResources(cm)
}

// ---- The data path: TLS backends, a real gateway, TLS clients through it.

// backend is a TLS server that answers every line with "<name> <line>".
type backend struct {
	name string
	addr string
	ln   net.Listener
}

var (
	certOnce    sync.Once
	backendCert tls.Certificate
	backendPool *x509.CertPool
)

func startBackend(t *testing.T, name string) *backend {
	t.Helper()
	certOnce.Do(func() { backendCert, backendPool = tlstest.Cert(t, "echo.demo.svc") })
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{backendCert}})
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, addr: ln.Addr().String(), ln: ln}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := fmt.Fprintf(c, "%s %s", name, line); err != nil {
						return
					}
				}
			}()
		}
	}()
	return b
}

// call opens TLS through the gateway with the service's SNI and returns which backend
// answered (the certificate must be the backend's own: TLS is not terminated between).
func call(gwAddr, sni string) (string, error) {
	c, err := tlstest.DialPassthrough(gwAddr, sni, backendPool, "echo.demo.svc")
	if err != nil {
		return "", err
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "ping\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	who, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
	if rest != "ping" {
		return "", fmt.Errorf("reply %q", line)
	}
	return who, nil
}

// calls makes n calls and returns who answered, by name.
func calls(t *testing.T, gwAddr, sni string, n int) map[string]int {
	t.Helper()
	out := map[string]int{}
	for i := 0; i < n; i++ {
		who, err := call(gwAddr, sni)
		if err != nil {
			t.Fatalf("call %d through the gateway: %v", i, err)
		}
		out[who]++
	}
	return out
}

// gateway is a real east-west gateway whose routes come from an xDS source.
type gateway struct {
	*eastwest.Gateway
	addr   string
	src    *xdsroutes.Source
	reg    *prometheus.Registry
	logs   *logBuf
	cancel context.CancelFunc
}

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testLogger keeps logs in memory and prints them when the test fails.
func testLogger(t *testing.T) (*slog.Logger, *logBuf) {
	lb := &logBuf{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log("logs:\n" + lb.String())
		}
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// fastConfig is a source config with test-sized backoff.
func fastConfig(addr string) xdsroutes.Config {
	return xdsroutes.Config{Address: addr, Cluster: "east", Host: "gw-0",
		BackoffBase: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond, ConnectTimeout: 2 * time.Second}
}

// newGateway makes the gateway and its xDS source; startSource runs StartSource.
func newGateway(t *testing.T, cfg xdsroutes.Config) *gateway {
	t.Helper()
	log, lb := testLogger(t)
	reg := prometheus.NewRegistry()
	cfg.Registry, cfg.Log = reg, log
	src, err := xdsroutes.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g, err := eastwest.New(eastwest.Config{Cluster: "east", Log: log, Registry: reg, DrainTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := eastwest.Listen(context.Background(), "127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Serve(ctx, ln) }()
	x := &gateway{Gateway: g, addr: ln.Addr().String(), src: src, reg: reg, logs: lb, cancel: cancel}
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("gateway did not stop")
		}
	})
	return x
}

// startSource starts the xDS source the way the command does and returns when the first
// table is in force (or fails the test after timeout).
func (g *gateway) startSource(t *testing.T, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- g.StartSource(ctx, g.src) }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(timeout):
		cancel()
		t.Fatalf("no first route table within %v (status %+v)", timeout, g.src.Status())
	}
	t.Cleanup(func() {
		cancel()
		// Run returns once ctx ends; wait for the link to drop so no goroutine outlives the test.
		waitfor.Cond(t, 5*time.Second, func() bool { return !g.src.Status().Connected }, "xDS source stops")
	})
}

// routes summarises the source's table in force: "ns/name:port=addr:port(ready,zone,weight) ..."
func routes(t *eastwest.RouteTable) string {
	if t == nil {
		return "<none>"
	}
	var parts []string
	for _, k := range t.Keys() {
		var eps []string
		for _, e := range t.Services[k] {
			r := "ready"
			if !e.Ready {
				r = "not-ready"
			}
			eps = append(eps, fmt.Sprintf("%s(%s,%s,%d)", e.HostPort(), r, e.Zone, e.Weight))
		}
		parts = append(parts, k.String()+"="+strings.Join(eps, ","))
	}
	return strings.Join(parts, " ")
}

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}
