package xds_test

import (
	"context"
	"crypto/x509"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshfed/meshfed/api/fault"
	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/federation/health"
	"github.com/meshfed/meshfed/federation/xds"
	"github.com/meshfed/meshfed/internal/metrictest"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/view"
)

// These tests speak ADS on the wire as the two clients that cannot run here do: Envoy (not
// packaged in Debian; delta ADS) and the gateway's xDS client (written later, inside
// eastwest/; state of the world). The resources they get are the contract of docs/xds.md.

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func localView(rev int64, eps ...records.Endpoint) *view.View {
	exp := &records.Export{Cluster: "east", Namespace: "demo", Name: "echo", Type: records.TypeClusterSetIP,
		Ports: []records.Port{{Name: "grpc", Port: 8443, TargetPort: 9443, Protocol: "TCP"}}, Endpoints: append([]records.Endpoint(nil), eps...),
		Revision: rev, ExportedAt: t0, UpdatedAt: t0.Add(time.Duration(rev) * time.Second)}
	v := &view.View{Revision: rev,
		Clusters: map[string]*records.Cluster{"east": {Name: "east", Network: "n", Region: "r1", Zone: "r1a",
			TrustDomain: "east.example", Gateways: []string{"127.0.0.1:1"}, JoinedAt: t0}},
		Services: map[string]*view.Service{}, Alive: map[string]bool{"east": true}}
	if len(eps) > 0 {
		v.Services["demo/echo"] = view.Merge([]*view.ClusterExport{{Cluster: "east", Export: exp}})
	}
	return v
}

func startServer(t *testing.T, first *view.View) (*xds.Server, *xds.Feed, *prometheus.Registry) {
	t.Helper()
	return startServerWith(t, first, xds.Options{Listen: "127.0.0.1:0"})
}

// startServerWith runs east's xDS server with opts, fed first.
func startServerWith(t *testing.T, first *view.View, opts xds.Options) (*xds.Server, *xds.Feed, *prometheus.Registry) {
	t.Helper()
	log := testLogger(t)
	reg := prometheus.NewRegistry()
	hc, err := health.New(health.Options{}, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	feed := xds.NewFeed()
	s, err := xds.New("east", feed.C(), hc, log, reg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(); err == nil {
		t.Fatal("ready before any view")
	}
	feed.Send(first)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = hc.Run(ctx) }()
	go func() { _ = s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, feed, reg
}

func dial(t *testing.T, addr string) discoverygrpc.AggregatedDiscoveryServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return discoverygrpc.NewAggregatedDiscoveryServiceClient(cc)
}

// sotwClient is a state-of-the-world ADS client that ACKs everything.
type sotwClient struct {
	t      *testing.T
	node   *corev3.Node
	stream discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	sent   bool
	got    map[string]int // responses received, by type
}

func newSotw(t *testing.T, ads discoverygrpc.AggregatedDiscoveryServiceClient, node *corev3.Node) *sotwClient {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &sotwClient{t: t, node: node, stream: st, got: map[string]int{}}
}

func (c *sotwClient) subscribe(typeURL string, names ...string) {
	c.t.Helper()
	req := &discoverygrpc.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: names}
	if !c.sent {
		req.Node, c.sent = c.node, true
	}
	if err := c.stream.Send(req); err != nil {
		c.t.Fatal(err)
	}
}

// recv waits for the next response of typeURL (ACKing others) and ACKs it.
func (c *sotwClient) recv(typeURL string, names ...string) *discoverygrpc.DiscoveryResponse {
	c.t.Helper()
	for {
		resp, err := recvTimeout(c.stream.Recv, 10*time.Second)
		if err != nil {
			c.t.Fatalf("recv %s: %v", typeURL, err)
		}
		ack := &discoverygrpc.DiscoveryRequest{TypeUrl: resp.TypeUrl, VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce, ResourceNames: names}
		if err := c.stream.Send(ack); err != nil {
			c.t.Fatal(err)
		}
		c.got[resp.TypeUrl]++
		if resp.TypeUrl == typeURL {
			return resp
		}
	}
}

func recvTimeout[T any](recv func() (T, error), d time.Duration) (T, error) {
	type r struct {
		v   T
		err error
	}
	ch := make(chan r, 1)
	go func() { v, err := recv(); ch <- r{v, err} }()
	select {
	case x := <-ch:
		return x.v, x.err
	case <-time.After(d):
		var zero T
		return zero, context.DeadlineExceeded
	}
}

func endpointsOf(t *testing.T, cla *endpointv3.ClusterLoadAssignment) string {
	var out []string
	for _, l := range cla.Endpoints {
		for _, e := range l.LbEndpoints {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, l.GetLocality().GetZone()+"/"+sa.GetAddress()+":"+strconv.FormatUint(uint64(sa.GetPortValue()), 10))
		}
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// TestGatewayContract: a node with metadata meshfed.role=gateway gets this cluster's own
// exports as inbound clusters with the ready endpoints at their target ports, and follows
// changes; it gets nothing of the outbound world.
func TestGatewayContract(t *testing.T) {
	eps := []records.Endpoint{{Address: "10.0.0.1", Zone: "a", Ready: true}, {Address: "10.0.0.2", Zone: "b", Ready: true}, {Address: "10.0.0.3", Zone: "a"}}
	s, feed, _ := startServer(t, localView(1, eps...))
	md, _ := structpb.NewStruct(map[string]any{names.NodeRoleKey: names.NodeRoleGateway})
	gw := newSotw(t, dial(t, s.Addr()), &corev3.Node{Id: "gw-east", Cluster: "east", UserAgentName: "meshfed-gateway", Metadata: md})

	gw.subscribe(resourcev3.ClusterType) // wildcard: every exported service port
	resp := gw.recv(resourcev3.ClusterType)
	inbound := "inbound|8443||echo.demo.svc.cluster.local"
	if len(resp.Resources) != 1 {
		t.Fatalf("gateway CDS: %d resources", len(resp.Resources))
	}
	var c clusterv3.Cluster
	if err := resp.Resources[0].UnmarshalTo(&c); err != nil || c.Name != inbound || c.TransportSocket != nil {
		t.Fatalf("gateway cluster %v (%v)", &c, err)
	}
	gw.subscribe(resourcev3.EndpointType, inbound)
	resp = gw.recv(resourcev3.EndpointType, inbound)
	var cla endpointv3.ClusterLoadAssignment
	if err := resp.Resources[0].UnmarshalTo(&cla); err != nil {
		t.Fatal(err)
	}
	if got := endpointsOf(t, &cla); got != "a/10.0.0.1:9443 b/10.0.0.2:9443" {
		t.Fatalf("gateway endpoints %q", got)
	}

	// A readiness change reaches the gateway.
	eps[1].Ready = false
	feed.Send(localView(2, eps...))
	resp = gw.recv(resourcev3.EndpointType, inbound)
	cla.Reset()
	if err := resp.Resources[0].UnmarshalTo(&cla); err != nil {
		t.Fatal(err)
	}
	if got := endpointsOf(t, &cla); got != "a/10.0.0.1:9443" {
		t.Fatalf("after readiness change: %q", got)
	}

	// A local export straight from discovery may carry no new revision or time: a change
	// of content alone is pushed too.
	eps[0].Ready = false
	eps[1].Ready = true
	v := localView(2, eps...)
	v.Revision = 3
	feed.Send(v)
	resp = gw.recv(resourcev3.EndpointType, inbound)
	cla.Reset()
	if err := resp.Resources[0].UnmarshalTo(&cla); err != nil {
		t.Fatal(err)
	}
	if got := endpointsOf(t, &cla); got != "b/10.0.0.2:9443" {
		t.Fatalf("after a content-only change: %q", got)
	}

	// Unexport: the cluster disappears from the gateway's (full-state) CDS. Endpoint
	// changes pushed EDS only: this is the second CDS response the gateway sees.
	feed.Send(localView(4))
	resp = gw.recv(resourcev3.ClusterType)
	if len(resp.Resources) != 0 {
		t.Fatalf("unexported service still routed: %d clusters", len(resp.Resources))
	}
	if n := gw.got[resourcev3.ClusterType]; n != 2 {
		t.Fatalf("gateway got %d CDS responses, want 2 (endpoint changes must not push CDS)", n)
	}
}

// TestGatewayFault: a drill with a gateway fault against this cluster puts the fault in
// the metadata of every inbound cluster it covers; its end takes it out. A fault against
// another cluster, or a cordon, changes nothing the gateway gets.
func TestGatewayFault(t *testing.T) {
	eps := []records.Endpoint{{Address: "10.0.0.1", Zone: "a", Ready: true}}
	s, feed, _ := startServer(t, localView(1, eps...))
	md, _ := structpb.NewStruct(map[string]any{names.NodeRoleKey: names.NodeRoleGateway})
	gw := newSotw(t, dial(t, s.Addr()), &corev3.Node{Id: "gw-east", Cluster: "east", UserAgentName: "meshfed-gateway", Metadata: md})
	gw.subscribe(resourcev3.ClusterType)
	faultOf := func(resp *discoverygrpc.DiscoveryResponse) *fault.Fault {
		t.Helper()
		var c clusterv3.Cluster
		if len(resp.Resources) != 1 || resp.Resources[0].UnmarshalTo(&c) != nil {
			t.Fatalf("gateway CDS: %v", resp.Resources)
		}
		m := c.GetMetadata().GetFilterMetadata()[fault.MetadataKey]
		if m == nil {
			return nil
		}
		f, err := fault.FromStruct(m)
		if err != nil {
			t.Fatalf("fault metadata: %v", err)
		}
		return &f
	}
	if f := faultOf(gw.recv(resourcev3.ClusterType)); f != nil {
		t.Fatalf("fault before any drill: %v", f)
	}
	deadline := time.Now().Add(time.Hour).UTC().Round(0)
	v := localView(2, eps...)
	v.Drills = []*records.Drill{
		{ID: "d0", Cluster: "west", Until: deadline, Fault: "reset", FaultDeadline: deadline},
		{ID: "d1", Cluster: "east", Until: deadline, Fault: "delay=2s", FaultDeadline: deadline},
	}
	feed.Send(v)
	want := fault.Fault{Spec: fault.Spec{Kind: fault.Delay, Delay: 2 * time.Second}, ID: "d1", Deadline: deadline}
	if f := faultOf(gw.recv(resourcev3.ClusterType)); f == nil || *f != want {
		t.Fatalf("fault %v, want %v", f, want)
	}
	feed.Send(localView(3, eps...))
	if f := faultOf(gw.recv(resourcev3.ClusterType)); f != nil {
		t.Fatalf("fault after the drill ended: %v", f)
	}
}

// TestEnvoyDelta: an Envoy (delta ADS) gets the outbound cluster with SDS validation, the
// SPIFFE validator secret once bundles are set, and endpoints; removals arrive as delta
// removals.
func TestEnvoyDelta(t *testing.T) {
	eps := []records.Endpoint{{Address: "10.0.0.1", Zone: "a", Ready: true}}
	s, feed, reg := startServer(t, localView(1, eps...))
	ca := newTestCA(t, "east.example")
	if err := s.SetTrustBundles(map[string][]*x509.Certificate{"east.example": {ca.cert}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := dial(t, s.Addr()).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "envoy-1", Cluster: "east", UserAgentName: "envoy"}
	send := func(r *discoverygrpc.DeltaDiscoveryRequest) {
		t.Helper()
		if err := st.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	recv := func(typeURL string) *discoverygrpc.DeltaDiscoveryResponse {
		t.Helper()
		for {
			r, err := recvTimeout(st.Recv, 10*time.Second)
			if err != nil {
				t.Fatalf("delta recv %s: %v", typeURL, err)
			}
			send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce})
			if r.TypeUrl == typeURL {
				return r
			}
		}
	}
	send(&discoverygrpc.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType})
	r := recv(resourcev3.ClusterType)
	outbound := "outbound|8443||echo.demo.svc.clusterset.local"
	if len(r.Resources) != 1 || r.Resources[0].Name != outbound {
		t.Fatalf("envoy CDS %v", r.Resources)
	}
	var c clusterv3.Cluster
	if err := r.Resources[0].Resource.UnmarshalTo(&c); err != nil {
		t.Fatal(err)
	}
	var utc tlsv3.UpstreamTlsContext
	if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(&utc); err != nil {
		t.Fatal(err)
	}
	if utc.Sni != "outbound_.8443_._.echo.demo.svc.cluster.local" ||
		utc.GetCommonTlsContext().GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName() != xds.SPIFFEValidatorSecret {
		t.Fatalf("envoy tls %v", &utc)
	}

	send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNamesSubscribe: []string{xds.SPIFFEValidatorSecret}})
	sr := recv(resourcev3.SecretType)
	var sec tlsv3.Secret
	if len(sr.Resources) != 1 || sr.Resources[0].Resource.UnmarshalTo(&sec) != nil ||
		sec.GetValidationContext().GetCustomValidatorConfig().GetName() != "envoy.tls.cert_validator.spiffe" {
		t.Fatalf("envoy SDS %v", sr.Resources)
	}

	send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{outbound}})
	er := recv(resourcev3.EndpointType)
	var cla endpointv3.ClusterLoadAssignment
	if len(er.Resources) != 1 || er.Resources[0].Resource.UnmarshalTo(&cla) != nil {
		t.Fatalf("envoy EDS %v", er.Resources)
	}
	if got := endpointsOf(t, &cla); got != "a/10.0.0.1:9443" {
		t.Fatalf("envoy endpoints %q: this cluster's own endpoint, direct, at the target port", got)
	}

	feed.Send(localView(2))
	r = recv(resourcev3.ClusterType)
	if len(r.RemovedResources) != 1 || r.RemovedResources[0] != outbound {
		t.Fatalf("unexport: delta %v removed %v", r.Resources, r.RemovedResources)
	}
	if n := metrictest.Sum(t, reg, "meshfed_xds_streams", "class", "envoy", "protocol", "delta"); n != 1 {
		t.Fatalf("streams metric %v", n)
	}
}

// TestClosedViewChannel: when the view producer goes away the server keeps serving its
// last plan.
func TestClosedViewChannel(t *testing.T) {
	log := testLogger(t)
	hc, err := health.New(health.Options{}, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan *view.View, 1)
	ch <- localView(1, records.Endpoint{Address: "10.0.0.1", Ready: true})
	close(ch)
	s, err := xds.New("east", ch, hc, log, nil, xds.Options{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	md, _ := structpb.NewStruct(map[string]any{names.NodeRoleKey: names.NodeRoleGateway})
	gw := newSotw(t, dial(t, s.Addr()), &corev3.Node{Id: "gw", Metadata: md})
	gw.subscribe(resourcev3.ClusterType)
	if resp := gw.recv(resourcev3.ClusterType); len(resp.Resources) != 1 {
		t.Fatalf("after the view channel closed: %d clusters", len(resp.Resources))
	}
}
