package istio

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/meshfed/meshfed/federation/planner"
	"github.com/meshfed/meshfed/internal/istiotest"
	"github.com/meshfed/meshfed/internal/kubetest"
	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/keyspace/records"
)

// echoPlan is the plan of demo/echo seen from east: west (same region) first, then north,
// each with its gateway addresses; weights are their ready endpoints.
func echoPlan(levels ...planner.Level) *Service {
	return &Service{
		Plan:  planner.ServicePlan{Namespace: "demo", Name: "echo", Ports: []planner.PortPlan{{Port: 8443, Levels: levels}}},
		Ports: []records.Port{{Name: "https", Port: 8443, Protocol: "TCP"}},
	}
}

func gw(cluster, region, zone string, weight uint32, addrs ...string) planner.Level {
	l := planner.Level{Cluster: cluster, Region: region, Zone: zone, Weight: weight}
	for _, a := range addrs {
		l.Endpoints = append(l.Endpoints, planner.Endpoint{Host: a, Port: 15443, Weight: weight})
	}
	return l
}

const echoCluster = "outbound|8443||echo.demo.svc.cluster.local"

// TestIstiodTakesThePlan runs a real istiod fed by this package's server and reads what it
// sends a sidecar of east: the resource form (ServiceEntry, WorkloadEntry per gateway
// address, DestinationRule with failoverPriority) must give the SNI meshfed's gateways
// route and EDS in meshfed's order — whatever the node's locality says — with one endpoint
// per gateway address and weights = ready endpoints; a new order, a removed cluster and a
// removed service must follow.
func TestIstiodTakesThePlan(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kube-apiserver and istiod")
	}
	if istiotest.Binary() == "" {
		t.Skip(istiotest.SkipHint)
	}
	api := kubetest.Start(t)
	srv, _ := startServer(t, Options{})
	src := NewSource(srv, BuildOptions{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = src.Run(ctx) }()

	// The plan's order deliberately disagrees with locality: north (another region) first.
	src.Update(map[string]*Service{"demo/echo": echoPlan(
		gw("north", "r2", "r2-a", 3, "127.0.0.31"),
		gw("west", "r1", "r1-b", 2, "127.0.0.21", "127.0.0.22"),
	)})
	waitState(t, srv)

	mesh := fmt.Sprintf("configSources:\n- address: xds://%s\n- address: k8s://\ntrustDomain: east.example\n", srv.Addr())
	ist := istiotest.Start(t, istiotest.Config{APIServer: api, ClusterID: "east", MeshConfig: []byte(mesh)})

	sc, err := istiotest.ConnectSidecar(ist.XDSAddr, istiotest.SidecarConfig{
		IP: "10.1.0.5", Pod: "client-0", Namespace: "demo", ClusterID: "east", Network: "net-east",
		Labels:   map[string]string{"app": "client"},
		Locality: &corev3.Locality{Region: "r1", Zone: "r1-a", SubZone: "east"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()

	want := func(eps ...istiotest.Endpoint) func(istiotest.Snapshot) bool {
		return func(s istiotest.Snapshot) bool {
			got := istiotest.Flatten(s.Endpoints[echoCluster])
			return fmt.Sprint(got) == fmt.Sprint(eps)
		}
	}
	north := istiotest.Endpoint{Priority: 0, Locality: "r2/r2-a/north", Address: "127.0.0.31:15443", Weight: 3}
	west1 := istiotest.Endpoint{Priority: 1, Locality: "r1/r1-b/west", Address: "127.0.0.21:15443", Weight: 2}
	west2 := istiotest.Endpoint{Priority: 1, Locality: "r1/r1-b/west", Address: "127.0.0.22:15443", Weight: 2}
	snap, took, err := sc.WaitFor(60*time.Second, want(north, west1, west2))
	if err != nil {
		t.Fatalf("EDS: %v\ngot %v\nistiod: %s", err, istiotest.Flatten(snap.Endpoints[echoCluster]), ist.LogTail(30))
	}
	t.Logf("first EDS after %v: %v", took, istiotest.Flatten(snap.Endpoints[echoCluster]))

	// CDS: EDS cluster with Istio mTLS and the SNI meshfed's gateways route.
	c := snap.Clusters[echoCluster]
	if c == nil {
		t.Fatalf("no CDS %s; have %v", echoCluster, keys(snap.Clusters))
	}
	sni, validation := clusterTLS(t, c)
	if want := "outbound_.8443_._.echo.demo.svc.cluster.local"; sni != want {
		t.Errorf("SNI %q, want %q", sni, want)
	}
	t.Logf("CDS %s: SNI %s, validation %s", c.GetName(), sni, validation)

	// The plan changes order: west first now (e.g. a policy override).
	src.Update(map[string]*Service{"demo/echo": echoPlan(
		gw("west", "r1", "r1-b", 2, "127.0.0.21", "127.0.0.22"),
		gw("north", "r2", "r2-a", 3, "127.0.0.31"),
	)})
	west1.Priority, west2.Priority, north.Priority = 0, 0, 1
	if snap, took, err = sc.WaitFor(30*time.Second, want(west1, west2, north)); err != nil {
		t.Fatalf("reorder: %v; got %v", err, istiotest.Flatten(snap.Endpoints[echoCluster]))
	}
	t.Logf("reorder reached the sidecar in %v", took)

	// West leaves the plan (gateway down, drill, no ready endpoints: the plan says so).
	src.Update(map[string]*Service{"demo/echo": echoPlan(gw("north", "r2", "r2-a", 3, "127.0.0.31"))})
	north.Priority = 0
	if snap, took, err = sc.WaitFor(30*time.Second, want(north)); err != nil {
		t.Fatalf("west removed: %v; got %v", err, istiotest.Flatten(snap.Endpoints[echoCluster]))
	}
	t.Logf("removal reached the sidecar in %v", took)

	// The service is no longer imported: the cluster goes.
	src.Update(map[string]*Service{"demo/echo": nil})
	if _, _, err = sc.WaitFor(30*time.Second, func(s istiotest.Snapshot) bool { return s.Clusters[echoCluster] == nil }); err != nil {
		t.Fatalf("unimport: %v", err)
	}
}

func waitState(t *testing.T, s *Server) {
	t.Helper()
	waitfor.Cond(t, 10*time.Second, func() bool { return s.Ready() == nil }, "no state")
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		if strings.Contains(k, "echo") {
			out = append(out, k)
		}
	}
	return out
}

// clusterTLS returns the SNI of the cluster's Istio mTLS transport socket match and a
// description of how it validates the peer.
func clusterTLS(t *testing.T, c *clusterv3.Cluster) (sni, validation string) {
	t.Helper()
	for _, m := range c.GetTransportSocketMatches() {
		ts := m.GetTransportSocket()
		if ts.GetName() != "envoy.transport_sockets.tls" {
			continue
		}
		u := &tlsv3.UpstreamTlsContext{}
		if err := ts.GetTypedConfig().UnmarshalTo(u); err != nil {
			t.Fatal(err)
		}
		cv := u.GetCommonTlsContext().GetCombinedValidationContext()
		return u.GetSni(), fmt.Sprintf("SANs %v, roots SDS %q", cv.GetDefaultValidationContext().GetMatchTypedSubjectAltNames(),
			cv.GetValidationContextSdsSecretConfig().GetName())
	}
	if ts := c.GetTransportSocket(); ts != nil {
		u := &tlsv3.UpstreamTlsContext{}
		if err := ts.GetTypedConfig().UnmarshalTo(u); err == nil {
			return u.GetSni(), "transport socket"
		}
	}
	t.Fatalf("cluster %s has no TLS transport socket: %v", c.GetName(), c)
	return "", ""
}
