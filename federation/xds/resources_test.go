package xds

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	// Registers every Envoy type so protojson can resolve the Any payloads.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/federation/planner"
	"github.com/meshfed/meshfed/internal/testpki"
	"github.com/meshfed/meshfed/keyspace/records"
)

// roundTrip checks what an Envoy would do with a resource we cannot feed to a real Envoy
// here (Envoy is not packaged in Debian): it validates, survives protojson both ways
// (every Any resolves to a registered type), and decodes back equal.
func roundTrip(t *testing.T, m proto.Message) {
	t.Helper()
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			t.Fatalf("%T does not validate: %v", m, err)
		}
	}
	js, err := protojson.Marshal(m)
	if err != nil {
		t.Fatalf("protojson %T: %v", m, err)
	}
	back := m.ProtoReflect().New().Interface()
	if err := protojson.Unmarshal(js, back); err != nil {
		t.Fatalf("protojson back %T: %v\n%s", m, err, js)
	}
	if !proto.Equal(m, back) {
		t.Fatalf("%T changed in a protojson round trip", m)
	}
}

func TestBuildCLA(t *testing.T) {
	pp := &planner.PortPlan{Port: 8443, Levels: []planner.Level{
		{Cluster: "east", Direct: true, Region: "r1", Zone: "r1a", Weight: 3, Endpoints: []planner.Endpoint{
			{Host: "10.0.0.1", Port: 9443, Weight: 1, Zone: "r1a"}, {Host: "10.0.0.2", Port: 9443, Weight: 2, Zone: "r1b"},
		}},
		{Cluster: "west", Region: "r1", Zone: "r1c", Weight: 4, Endpoints: []planner.Endpoint{
			{Host: "192.0.2.1", Port: 15443, Weight: 4}, {Host: "192.0.2.2", Port: 15443, Weight: 4},
		}},
		{Cluster: "north", Region: "r2", Zone: "r2a", Weight: 1, Endpoints: []planner.Endpoint{{Host: "198.51.100.1", Port: 15443, Weight: 1}}},
	}}
	name := names.ClusterName("demo", "echo", 8443)
	cla, err := buildCLA(name, pp, newBuilder())
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, cla)
	type loc struct {
		prio          uint32
		region, zone  string
		sub           string
		weight, count uint32
	}
	var got []loc
	for _, l := range cla.Endpoints {
		got = append(got, loc{l.Priority, l.Locality.Region, l.Locality.Zone, l.Locality.SubZone, l.LoadBalancingWeight.GetValue(), uint32(len(l.LbEndpoints))})
	}
	want := []loc{
		{0, "r1", "r1a", "east", 1, 1}, // local endpoints split per zone, weight = sum of endpoint weights
		{0, "r1", "r1b", "east", 2, 1},
		{1, "r1", "r1c", "west", 4, 2}, // remote: weight = ready endpoint count
		{2, "r2", "r2a", "north", 1, 1},
	}
	if len(got) != len(want) {
		t.Fatalf("localities %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("locality %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	ep := cla.Endpoints[2].LbEndpoints[0]
	if sa := ep.GetEndpoint().GetAddress().GetSocketAddress(); sa.GetAddress() != "192.0.2.1" || sa.GetPortValue() != 15443 ||
		ep.GetLoadBalancingWeight().GetValue() != 4 || ep.HealthStatus != corev3.HealthStatus_HEALTHY {
		t.Fatalf("gateway endpoint %v", ep)
	}

	// No plan at all (every cluster excluded) is a valid, empty assignment.
	empty, err := buildCLA(name, &planner.PortPlan{Port: 8443}, nil)
	if err != nil || len(empty.Endpoints) != 0 {
		t.Fatalf("empty: %v %v", empty, err)
	}
}

func TestBuildClusters(t *testing.T) {
	name := names.ClusterName("demo", "echo", 8443)
	ctls := clusterTLS{SNI: names.ServiceSNI("demo", "echo", 8443), TrustDomains: []string{"north.example", "west.example"}}

	g, err := buildGRPCCluster(name, ctls, "meshfed")
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, g)
	if g.GetType() != clusterv3.Cluster_EDS || g.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
		t.Fatalf("grpc cluster is not EDS over ADS: %v", g)
	}
	utc := upstreamTLS(t, g)
	if utc.Sni != "outbound_.8443_._.echo.demo.svc.cluster.local" {
		t.Fatalf("sni %q", utc.Sni)
	}
	ctx := utc.CommonTlsContext
	if ctx.GetTlsCertificateProviderInstance().GetInstanceName() != "meshfed" ||
		ctx.GetValidationContext().GetCaCertificateProviderInstance().GetInstanceName() != "meshfed" {
		t.Fatalf("grpc tls does not use the provider instance: %v", ctx)
	}
	if ctx.GetValidationContext().GetCustomValidatorConfig() != nil || ctx.GetValidationContextSdsSecretConfig() != nil {
		t.Fatal("grpc-go NACKs custom validators and SDS validation contexts")
	}
	var prefixes []string
	for _, m := range ctx.GetValidationContext().GetMatchSubjectAltNames() {
		prefixes = append(prefixes, m.GetPrefix())
	}
	if strings.Join(prefixes, " ") != "spiffe://north.example/ spiffe://west.example/" {
		t.Fatalf("san matchers %v", prefixes)
	}

	e, err := buildEnvoyCluster(name, ctls, DefaultEnvoyIdentitySecret)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, e)
	utc = upstreamTLS(t, e)
	comb := utc.GetCommonTlsContext().GetCombinedValidationContext()
	if comb.GetValidationContextSdsSecretConfig().GetName() != SPIFFEValidatorSecret ||
		comb.GetValidationContextSdsSecretConfig().GetSdsConfig().GetAds() == nil {
		t.Fatalf("envoy validation does not come from SDS: %v", comb)
	}
	if len(comb.GetDefaultValidationContext().GetMatchTypedSubjectAltNames()) != 2 {
		t.Fatalf("envoy san matchers: %v", comb.GetDefaultValidationContext())
	}
	if sds := utc.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs(); len(sds) != 1 || sds[0].GetName() != DefaultEnvoyIdentitySecret || sds[0].GetSdsConfig() != nil {
		t.Fatalf("envoy identity must be the static secret %s: %v", DefaultEnvoyIdentitySecret, sds)
	}

	in, err := buildInboundCluster(names.InboundClusterName("demo", "echo", 8443, ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, in)
	if in.GetTransportSocket() != nil {
		t.Fatal("the gateway's inbound cluster must not carry TLS (passthrough)")
	}
}

func upstreamTLS(t *testing.T, c *clusterv3.Cluster) *tlsv3.UpstreamTlsContext {
	t.Helper()
	ts := c.GetTransportSocket()
	if ts.GetName() != "envoy.transport_sockets.tls" {
		t.Fatalf("transport socket %q", ts.GetName())
	}
	var utc tlsv3.UpstreamTlsContext
	if err := ts.GetTypedConfig().UnmarshalTo(&utc); err != nil {
		t.Fatal(err)
	}
	return &utc
}

func TestBuildListenerAndRoute(t *testing.T) {
	ln := names.ListenerName("demo", "echo", 8443)
	l, err := buildListener(ln)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, l)
	var hcm hcmv3.HttpConnectionManager
	if err := l.GetApiListener().GetApiListener().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	if hcm.GetRds().GetRouteConfigName() != ln || hcm.GetRds().GetConfigSource().GetAds() == nil {
		t.Fatalf("hcm rds %v", hcm.GetRds())
	}
	if n := len(hcm.HttpFilters); n != 1 || hcm.HttpFilters[0].Name != routerFilterName {
		t.Fatalf("grpc-go requires the router filter last: %v", hcm.HttpFilters)
	}
	r, err := buildRoute(ln, names.ServiceHost("demo", "echo"), names.ClusterName("demo", "echo", 8443))
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, r)
	if got := r.VirtualHosts[0].Routes[0].GetRoute().GetCluster(); got != "outbound|8443||echo.demo.svc.clusterset.local" {
		t.Fatalf("route cluster %q", got)
	}
	var _ *listenerv3.Listener = l
	var _ *routev3.RouteConfiguration = r
}

func TestBuildInboundCLA(t *testing.T) {
	e := &records.Export{Cluster: "west", Namespace: "demo", Name: "echo", Endpoints: []records.Endpoint{
		{Address: "10.1.0.1", Zone: "z1", Ready: true}, {Address: "10.1.0.2", Zone: "z2", Ready: true, Weight: 3, HBONEPort: 15008},
		{Address: "10.1.0.3", Zone: "z1", Ready: false},
	}}
	name := names.InboundClusterName("demo", "echo", 8443, "")
	cla, err := buildInboundCLA(name, "west", "r1", e, records.Port{Port: 8443, TargetPort: 9443})
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, cla)
	var addrs []string
	for _, l := range cla.Endpoints {
		if l.Priority != 0 || l.Locality.SubZone != "west" || l.Locality.Region != "r1" {
			t.Fatalf("locality %v", l)
		}
		for _, ep := range l.LbEndpoints {
			sa := ep.GetEndpoint().GetAddress().GetSocketAddress()
			a := l.Locality.Zone + "/" + sa.GetAddress() + ":" + portStr(sa.GetPortValue())
			// The HBONE port travels in the endpoint's metadata (the gateway contract).
			if h, ok := ep.GetMetadata().GetFilterMetadata()[names.EndpointMetadataKey].GetFields()[names.HBONEPortField]; ok {
				a += "+hbone:" + portStr(uint32(h.GetNumberValue()))
			}
			addrs = append(addrs, a)
		}
	}
	if strings.Join(addrs, " ") != "z1/10.1.0.1:9443 z2/10.1.0.2:9443+hbone:15008" {
		t.Fatalf("inbound endpoints %v (ready ones only, at the target port, with their HBONE port)", addrs)
	}
	// targetPort 0 means the port itself.
	cla, _ = buildInboundCLA(name, "west", "r1", e, records.Port{Port: 8443})
	if p := cla.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue(); p != 8443 {
		t.Fatalf("default target port %d", p)
	}
}

func TestBuildSecrets(t *testing.T) {
	a, b := testCA(t, "a"), testCA(t, "b")
	secrets, err := buildSecrets(map[string][]*x509.Certificate{"west.example": {a, b}, "north.example": {a}, "revoked.example": nil})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets {
		roundTrip(t, s)
	}
	if len(secrets) != 3 {
		t.Fatalf("secrets %v: want one per non-empty trust domain and the validator", keys(secrets))
	}
	v := secrets[SPIFFEValidatorSecret].GetValidationContext().GetCustomValidatorConfig()
	if v.GetName() != "envoy.tls.cert_validator.spiffe" {
		t.Fatalf("validator %v", v)
	}
	var cfg tlsv3.SPIFFECertValidatorConfig
	if err := v.GetTypedConfig().UnmarshalTo(&cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.TrustDomains) != 2 || cfg.TrustDomains[0].Name != "north.example" || cfg.TrustDomains[1].Name != "west.example" {
		t.Fatalf("trust domains %v", cfg.TrustDomains)
	}
	if got := strings.Count(string(cfg.TrustDomains[1].GetTrustBundle().GetInlineBytes()), "BEGIN CERTIFICATE"); got != 2 {
		t.Fatalf("west bundle has %d certificates, want 2", got)
	}
	if secrets[BundleSecretPrefix+"west.example"].GetValidationContext().GetTrustedCa() == nil {
		t.Fatal("per trust domain secret lacks trusted_ca")
	}
	none, err := buildSecrets(nil)
	if err != nil || len(none) != 0 {
		t.Fatalf("no bundles: %v %v", none, err)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func testCA(t *testing.T, cn string) *x509.Certificate {
	t.Helper()
	return testpki.New(t, testpki.Spec{CN: cn, CA: true, Serial: 1, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}).Cert
}

func TestClassify(t *testing.T) {
	md := func(kv map[string]any) *structpb.Struct { s, _ := structpb.NewStruct(kv); return s }
	cases := []struct {
		node *corev3.Node
		typ  string
		key  string
	}{
		{&corev3.Node{UserAgentName: "gRPC Go"}, resourcev3.ClusterType, keyGRPCCDS},
		{&corev3.Node{UserAgentName: "gRPC Java"}, resourcev3.ListenerType, keyGRPCLDS},
		{&corev3.Node{UserAgentName: "gRPC Go"}, resourcev3.EndpointType, keyEDS},
		{&corev3.Node{UserAgentName: "gRPC Go"}, resourcev3.SecretType, keyEmptySDS},
		{&corev3.Node{UserAgentName: "envoy"}, resourcev3.ClusterType, keyEnvoyCDS},
		{&corev3.Node{UserAgentName: "envoy"}, resourcev3.EndpointType, keyEDS},
		{&corev3.Node{UserAgentName: "envoy"}, resourcev3.SecretType, keyEnvoySDS},
		{&corev3.Node{UserAgentName: "envoy"}, resourcev3.ListenerType, keyEmptyLDS},
		{nil, resourcev3.ClusterType, keyEnvoyCDS},
		{&corev3.Node{UserAgentName: "gRPC Go", Metadata: md(map[string]any{names.NodeRoleKey: names.NodeRoleGateway})}, resourcev3.ClusterType, keyGwCDS},
		{&corev3.Node{Metadata: md(map[string]any{names.NodeRoleKey: names.NodeRoleGateway})}, resourcev3.EndpointType, keyGwEDS},
		{&corev3.Node{Metadata: md(map[string]any{names.NodeRoleKey: names.NodeRoleGateway})}, resourcev3.RouteType, keyEmptyRDS},
		{&corev3.Node{}, resourcev3.RuntimeType, "unsupported"},
	}
	for _, c := range cases {
		if got := cacheKey(c.node, c.typ); got != c.key {
			t.Errorf("node %v type %s: %s, want %s", c.node, shortType(c.typ), got, c.key)
		}
	}
	for k, typ := range cacheTypes {
		if !strings.HasSuffix(k, "/"+shortType(typ)) {
			t.Errorf("cache %s serves %s", k, typ)
		}
	}
	var _ = endpointv3.ClusterLoadAssignment{}
}
