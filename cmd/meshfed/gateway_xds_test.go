package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
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
	"google.golang.org/grpc"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/eastwest/healthcheck"
	"github.com/meshfed/meshfed/internal/waitfor"
)

func TestGatewayRouteSourceFlags(t *testing.T) {
	base := gatewayFlags{cluster: "east", listen: ":15443", admin: "127.0.0.1:0", domain: "cluster.local",
		maxHelloBytes: 16384, helloTimeout: time.Second, connectTimeout: time.Second, pollInterval: time.Second,
		connectAttempts: 3, copyMode: "poll-splice"}
	for name, tc := range map[string]struct {
		exports, federation, want string
	}{
		"neither": {"", "", "--exports: required"},
		"both":    {"x.yaml", "127.0.0.1:15010", "--federation: give --federation or --exports, not both"},
		"bad":     {"", "federation", "--federation: \"federation\" is not HOST:PORT"},
		"cache":   {"x.yaml", "", "--federation-cache: only with --federation"},
		"tls":     {"", "127.0.0.1:15010", "--federation-ca: required with --federation-cert"},
	} {
		f := base
		f.exports, f.federation = tc.exports, tc.federation
		switch name {
		case "cache":
			f.federationCache = "/var/lib/meshfed/routes.json"
		case "tls":
			f.fedCert, f.fedKey = "gw.pem", "gw-key.pem"
		}
		if err := f.validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
	f := base
	f.federation = "127.0.0.1:15010"
	if err := f.validate(); err != nil {
		t.Fatalf("--federation alone: %v", err)
	}
}

// startInboundXDS serves the gateway contract (one inbound cluster, one endpoint) from a
// real go-control-plane ADS server on loopback.
func startInboundXDS(t *testing.T, endpoint string) string {
	t.Helper()
	name := names.InboundClusterName("demo", "echo", 8443, "")
	cds := cachev3.NewLinearCache(resourcev3.ClusterType)
	eds := cachev3.NewLinearCache(resourcev3.EndpointType)
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	cds.SetResources(map[string]types.Resource{name: &clusterv3.Cluster{Name: name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads}}})
	host, port, _ := net.SplitHostPort(endpoint)
	p, _ := net.LookupPort("tcp", port)
	eds.SetResources(map[string]types.Resource{name: &endpointv3.ClusterLoadAssignment{ClusterName: name,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
				Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: host,
					PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)}}}}}}}}}}}})
	mux := &cachev3.MuxCache{Classify: func(r *cachev3.Request) string { return r.GetTypeUrl() },
		Caches: map[string]cachev3.Cache{resourcev3.ClusterType: cds, resourcev3.EndpointType: eds}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	gs := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(ctx, mux, nil))
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(func() { gs.Stop(); cancel() })
	return ln.Addr().String()
}

// The command with --federation: routes from xDS, health says ok with the routed service,
// and a clean exit on cancellation. Started against a federation that is not there, it
// waits (not listening, not ready) and still stops cleanly.
func TestGatewayCommandFromFederation(t *testing.T) {
	xdsAddr := startInboundXDS(t, "127.0.0.1:9")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	cmd := newGatewayCmd()
	cmd.SetArgs([]string{"--cluster", "east", "--listen", addr, "--admin", "127.0.0.1:0", "--federation", xdsAddr, "--drain-timeout", "2s"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	var line string
	waitfor.Cond(t, 10*time.Second, func() bool {
		r, err := healthcheck.Probe(context.Background(), addr, nil)
		line = r.Line
		return err == nil && r.Healthy && r.Fields["service_ports"] == "1"
	}, "gateway healthy with the federation's route (last line %q)", line)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("gateway did not exit after cancellation")
	}

	// Nothing at the federation's address: the gateway waits for its first table.
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	al, _ := net.Listen("tcp", "127.0.0.1:0")
	adminAddr := al.Addr().String()
	al.Close()
	cmd = newGatewayCmd()
	cmd.SetArgs([]string{"--cluster", "east", "--listen", addr, "--admin", adminAddr, "--federation", deadAddr})
	ctx, cancel = context.WithCancel(context.Background())
	done = make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	// The admin endpoints are up while it waits: alive, not ready, and why.
	var body string
	waitfor.Cond(t, 10*time.Second, func() bool {
		r, err := http.Get("http://" + adminAddr + "/readyz")
		if err != nil {
			return false
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		body = string(b)
		return r.StatusCode == http.StatusServiceUnavailable && strings.Contains(body, "no route table yet")
	}, "/readyz says no route table yet (last %q)", body)
	if r, err := http.Get("http://" + adminAddr + "/metrics"); err != nil {
		t.Fatal(err)
	} else {
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if !strings.Contains(string(b), "meshfed_gateway_xds_connected 0") {
			t.Fatalf("metrics lack the xDS link:\n%s", b)
		}
	}
	if _, err := healthcheck.Probe(context.Background(), addr, nil); err == nil {
		t.Fatal("gateway listening without a route table")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("gateway waiting for the federation did not exit after cancellation")
	}
}
