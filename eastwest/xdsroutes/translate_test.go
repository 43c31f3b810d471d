package xdsroutes

import (
	"net"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/eastwest"
)

func lbEndpoint(host string, port uint32, h corev3.HealthStatus, w uint32) *endpointv3.LbEndpoint {
	lb := &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
			Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: host,
				PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}}},
		HealthStatus: h,
	}
	if w > 0 {
		lb.LoadBalancingWeight = wrapperspb.UInt32(w)
	}
	return lb
}

// withHBONE sets the endpoint's HBONE port metadata as the federation sends it.
func withHBONE(lb *endpointv3.LbEndpoint, v *structpb.Value) *endpointv3.LbEndpoint {
	lb.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		names.EndpointMetadataKey: {Fields: map[string]*structpb.Value{names.HBONEPortField: v}}}}
	return lb
}

func TestParseCLAHBONEPort(t *testing.T) {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: "inbound|8443||echo.demo.svc.cluster.local", Endpoints: []*endpointv3.LocalityLbEndpoints{
		locality("z1", 0,
			withHBONE(lbEndpoint("10.0.0.1", 9443, corev3.HealthStatus_HEALTHY, 0), structpb.NewNumberValue(15008)),
			lbEndpoint("10.0.0.2", 9443, corev3.HealthStatus_HEALTHY, 0)),
	}}
	eps, err := parseCLA(cla)
	if err != nil {
		t.Fatal(err)
	}
	if eps[0].HBONEPort != 15008 || eps[1].HBONEPort != 0 {
		t.Fatalf("endpoints %+v: only 10.0.0.1 has HBONE port 15008", eps)
	}
	for name, v := range map[string]*structpb.Value{
		"zero": structpb.NewNumberValue(0), "too large": structpb.NewNumberValue(70000),
		"fraction": structpb.NewNumberValue(15008.5), "string": structpb.NewStringValue("15008"),
	} {
		cla.Endpoints[0].LbEndpoints[0] = withHBONE(lbEndpoint("10.0.0.1", 9443, corev3.HealthStatus_HEALTHY, 0), v)
		if _, err := parseCLA(cla); err == nil || !strings.Contains(err.Error(), "meshfed.endpoint.hbonePort") {
			t.Errorf("%s: error %v, want one naming meshfed.endpoint.hbonePort", name, err)
		}
	}
}

func locality(zone string, prio uint32, lbs ...*endpointv3.LbEndpoint) *endpointv3.LocalityLbEndpoints {
	return &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{Region: "r", Zone: zone, SubZone: "east"}, Priority: prio, LbEndpoints: lbs}
}

func TestParseCLA(t *testing.T) {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: "inbound|8443||echo.demo.svc.cluster.local", Endpoints: []*endpointv3.LocalityLbEndpoints{
		locality("z2", 0,
			lbEndpoint("10.0.0.2", 9443, corev3.HealthStatus_UNKNOWN, 0),
			lbEndpoint("10.0.0.3", 9443, corev3.HealthStatus_UNHEALTHY, 1),
			lbEndpoint("10.0.0.4", 9443, corev3.HealthStatus_DRAINING, 1),
			lbEndpoint("10.0.0.5", 9443, corev3.HealthStatus_TIMEOUT, 1),
			lbEndpoint("10.0.0.6", 9443, corev3.HealthStatus_DEGRADED, 1)),
		locality("z1", 0, lbEndpoint("10.0.0.1", 9443, corev3.HealthStatus_HEALTHY, 3)),
		// A failover tier: not used while priority 0 has a ready endpoint.
		locality("z3", 1, lbEndpoint("10.0.1.1", 9443, corev3.HealthStatus_HEALTHY, 1)),
		locality("z1", 0, lbEndpoint("fd00::1", 9443, corev3.HealthStatus_HEALTHY, 1)),
	}}
	eps, err := parseCLA(cla)
	if err != nil {
		t.Fatal(err)
	}
	want := []eastwest.Endpoint{
		{Address: "10.0.0.1", Port: 9443, Zone: "z1", Ready: true, Weight: 3},
		{Address: "10.0.0.2", Port: 9443, Zone: "z2", Ready: true},
		{Address: "10.0.0.3", Port: 9443, Zone: "z2", Weight: 1},
		{Address: "10.0.0.4", Port: 9443, Zone: "z2", Weight: 1},
		{Address: "10.0.0.5", Port: 9443, Zone: "z2", Weight: 1},
		{Address: "10.0.0.6", Port: 9443, Zone: "z2", Weight: 1},
		{Address: "10.0.1.1", Port: 9443, Zone: "z3", Weight: 1},
		{Address: "fd00::1", Port: 9443, Zone: "z1", Ready: true, Weight: 1},
	}
	if len(eps) != len(want) {
		t.Fatalf("got %+v", eps)
	}
	for i := range want {
		if eps[i] != want[i] {
			t.Errorf("endpoint %d = %+v, want %+v", i, eps[i], want[i])
		}
	}

	// With no ready endpoint at priority 0, priority 1 is used.
	cla.Endpoints = []*endpointv3.LocalityLbEndpoints{
		locality("z1", 0, lbEndpoint("10.0.0.1", 9443, corev3.HealthStatus_UNHEALTHY, 0)),
		locality("z2", 1, lbEndpoint("10.0.0.2", 9443, corev3.HealthStatus_HEALTHY, 0)),
	}
	eps, err = parseCLA(cla)
	if err != nil || eps[0].Ready || !eps[1].Ready {
		t.Fatalf("failover tier: %+v %v", eps, err)
	}
}

func TestParseCLARefuses(t *testing.T) {
	named := lbEndpoint("10.0.0.1", 1, 0, 0)
	named.GetEndpoint().GetAddress().GetSocketAddress().PortSpecifier = &corev3.SocketAddress_NamedPort{NamedPort: "https"}
	udp := lbEndpoint("10.0.0.1", 1, 0, 0)
	udp.GetEndpoint().GetAddress().GetSocketAddress().Protocol = corev3.SocketAddress_UDP
	resolver := lbEndpoint("10.0.0.1", 1, 0, 0)
	resolver.GetEndpoint().GetAddress().GetSocketAddress().ResolverName = "dns"
	pipe := &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
		Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/tmp/s"}}}}}}
	byName := &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_EndpointName{EndpointName: "x"}}
	zeroWeight := lbEndpoint("10.0.0.1", 1, 0, 0)
	zeroWeight.LoadBalancingWeight = wrapperspb.UInt32(0)
	for name, tc := range map[string]struct {
		lbs  []*endpointv3.LbEndpoint
		want string
	}{
		"host name":     {[]*endpointv3.LbEndpoint{lbEndpoint("echo.example", 1, 0, 0)}, "not an IP literal"},
		"zoned ip":      {[]*endpointv3.LbEndpoint{lbEndpoint("fe80::1%eth0", 1, 0, 0)}, "not an IP literal"},
		"port 0":        {[]*endpointv3.LbEndpoint{lbEndpoint("10.0.0.1", 0, 0, 0)}, "port 0"},
		"named port":    {[]*endpointv3.LbEndpoint{named}, "named ports"},
		"udp":           {[]*endpointv3.LbEndpoint{udp}, "protocol UDP"},
		"resolver":      {[]*endpointv3.LbEndpoint{resolver}, "resolver_name"},
		"pipe":          {[]*endpointv3.LbEndpoint{pipe}, "not a socket address"},
		"endpoint name": {[]*endpointv3.LbEndpoint{byName}, "named endpoints"},
		"twice":         {[]*endpointv3.LbEndpoint{lbEndpoint("10.0.0.1", 1, 0, 0), lbEndpoint("10.0.0.1", 1, 0, 0)}, "listed twice"},
		"weight 0":      {[]*endpointv3.LbEndpoint{zeroWeight}, "invalid"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := parseCLA(&endpointv3.ClusterLoadAssignment{ClusterName: "c", Endpoints: []*endpointv3.LocalityLbEndpoints{locality("z", 0, tc.lbs...)}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

var adsSource = &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}

func edsCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource}, ConnectTimeout: durationpb.New(time.Second)}
}

func anyOf(t testing.TB, m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestParseClusters(t *testing.T) {
	echo := names.InboundClusterName("demo", "echo", 8443, "")
	other := edsCluster(names.InboundClusterName("demo", "other", 9000, ""))
	other.EdsClusterConfig.ServiceName = "other-eds"
	wrapped := anyOf(t, &discoveryv3.Resource{Name: other.Name, Resource: anyOf(t, other)})
	got, err := parseClusters([]*anypb.Any{anyOf(t, edsCluster(echo)), wrapped}, "cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	if got[echo] != (inbound{key: eastwest.ServiceKey{Namespace: "demo", Name: "echo", Port: 8443}, eds: echo}) ||
		got[other.Name].eds != "other-eds" || got[other.Name].key.Port != 9000 {
		t.Fatalf("parsed %+v", got)
	}

	static := edsCluster(echo)
	static.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
	foreign := edsCluster(echo)
	foreign.EdsClusterConfig.EdsConfig = &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Path{Path: "/x"}}
	invalid := edsCluster(echo)
	invalid.ConnectTimeout = durationpb.New(-time.Second)
	for name, tc := range map[string]struct {
		res  []*anypb.Any
		want string
	}{
		"outbound name": {[]*anypb.Any{anyOf(t, edsCluster(names.ClusterName("demo", "echo", 8443)))}, "no inbound| prefix"},
		"other domain":  {[]*anypb.Any{anyOf(t, edsCluster(names.InboundClusterName("demo", "echo", 8443, "corp.example")))}, "--domain"},
		"static":        {[]*anypb.Any{anyOf(t, static)}, "STATIC"},
		"not ads":       {[]*anypb.Any{anyOf(t, foreign)}, "ADS"},
		"invalid":       {[]*anypb.Any{anyOf(t, invalid)}, "invalid"},
		"wrong type":    {[]*anypb.Any{anyOf(t, &endpointv3.ClusterLoadAssignment{ClusterName: echo})}, "resource of type"},
		"twice":         {[]*anypb.Any{anyOf(t, edsCluster(echo)), anyOf(t, edsCluster(echo))}, "twice"},
		"garbage":       {[]*anypb.Any{{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Value: []byte{0xff, 0xff}}}, "decode"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := parseClusters(tc.res, "cluster.local")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}

	// One NACK lists a bounded number of problems.
	var many []*anypb.Any
	for i := 0; i < 20; i++ {
		many = append(many, anyOf(t, edsCluster("bad")))
	}
	_, err = parseClusters(many, "cluster.local")
	if err == nil || strings.Count(err.Error(), "\n") != maxErrors || !strings.Contains(err.Error(), "and 12 more") {
		t.Fatalf("many problems: %v", err)
	}
}

// FuzzParseCLA: any bytes as a ClusterLoadAssignment never panic the translation, and
// what it accepts is a route the gateway can dial.
func FuzzParseCLA(f *testing.F) {
	seed := &endpointv3.ClusterLoadAssignment{ClusterName: "inbound|8443||echo.demo.svc.cluster.local", Endpoints: []*endpointv3.LocalityLbEndpoints{
		locality("z1", 0, lbEndpoint("10.0.0.1", 9443, corev3.HealthStatus_HEALTHY, 2), lbEndpoint("fd00::2", 9443, corev3.HealthStatus_UNHEALTHY, 0)),
		locality("z2", 1, lbEndpoint("10.0.0.3", 1, corev3.HealthStatus_UNKNOWN, 0),
			withHBONE(lbEndpoint("10.0.0.4", 9443, corev3.HealthStatus_HEALTHY, 0), structpb.NewNumberValue(15008))),
	}}
	b, _ := proto.Marshal(seed)
	f.Add(b)
	f.Add([]byte{})
	bad, _ := proto.Marshal(&endpointv3.ClusterLoadAssignment{ClusterName: "x", Endpoints: []*endpointv3.LocalityLbEndpoints{
		locality("z", 0, lbEndpoint("host.example", 0, 0, 0))}})
	f.Add(bad)
	f.Fuzz(func(t *testing.T, data []byte) {
		var cla endpointv3.ClusterLoadAssignment
		if proto.Unmarshal(data, &cla) != nil {
			return
		}
		eps, err := parseCLA(&cla)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, e := range eps {
			if net.ParseIP(e.Address) == nil || e.Port == 0 || e.Port > 65535 || seen[e.HostPort()] {
				t.Fatalf("accepted endpoint %+v", e)
			}
			seen[e.HostPort()] = true
		}
		tbl := &eastwest.RouteTable{Services: map[eastwest.ServiceKey][]eastwest.Endpoint{{Namespace: "a", Name: "b", Port: 1}: eps}}
		if err := tbl.Validate(); err != nil {
			t.Fatalf("accepted a table the gateway refuses: %v", err)
		}
	})
}

// FuzzParseClusters: any bytes as a CDS resource never panic, and an accepted cluster
// always maps back to its inbound name.
func FuzzParseClusters(f *testing.F) {
	b, _ := proto.Marshal(edsCluster(names.InboundClusterName("demo", "echo", 8443, "")))
	f.Add(b)
	f.Add([]byte{})
	b, _ = proto.Marshal(edsCluster("inbound|0||x.y.svc.cluster.local"))
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		a := &anypb.Any{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Value: data}
		got, err := parseClusters([]*anypb.Any{a}, "cluster.local")
		if err != nil {
			return
		}
		for name, in := range got {
			if names.InboundClusterName(in.key.Namespace, in.key.Name, in.key.Port, "cluster.local") != name || in.eds == "" {
				t.Fatalf("accepted %q as %+v", name, in)
			}
		}
	})
}

func TestBackoff(t *testing.T) {
	s := &Source{cfg: Config{BackoffBase: 100 * time.Millisecond, BackoffMax: time.Second}}
	for fails, ceil := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		ceil *= time.Millisecond
		for i := 0; i < 50; i++ {
			d := s.backoff(fails)
			if d < ceil/2 || d > ceil {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", fails, d, ceil/2, ceil)
			}
		}
	}
	if d := s.backoff(1000); d > time.Second || d < 500*time.Millisecond {
		t.Fatalf("backoff after many failures = %v", d)
	}
}

func TestCacheRoundTrip(t *testing.T) {
	tbl := &eastwest.RouteTable{Origin: "xds x", Services: map[eastwest.ServiceKey][]eastwest.Endpoint{
		{Namespace: "demo", Name: "echo", Port: 8443}: {{Address: "10.0.0.1", Port: 9443, Zone: "z1", Ready: true, Weight: 2, HBONEPort: 15008}, {Address: "fd00::1", Port: 9443}},
		{Namespace: "demo", Name: "empty", Port: 1}:   {},
	}}
	now := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	data, err := encodeCache(tbl, "east", "cluster.local", now)
	if err != nil {
		t.Fatal(err)
	}
	got, saved, err := parseCache(data, "east", "cluster.local")
	if err != nil || !saved.Equal(now) || !sameRoutes(got, tbl) {
		t.Fatalf("round trip: %v %v %+v", err, saved, got)
	}
	for name, tc := range map[string]struct {
		data, want string
	}{
		"cluster":  {`{"version":1,"cluster":"west","domain":"cluster.local","savedAt":"2026-11-27T09:00:00Z","services":[]}`, "cluster: \"west\""},
		"domain":   {`{"version":1,"cluster":"east","domain":"x.example","savedAt":"2026-11-27T09:00:00Z","services":[]}`, "domain"},
		"version":  {`{"version":2,"cluster":"east","domain":"cluster.local","savedAt":"2026-11-27T09:00:00Z","services":[]}`, "version: 2"},
		"saved":    {`{"version":1,"cluster":"east","domain":"cluster.local","services":[]}`, "savedAt: missing"},
		"unknown":  {`{"version":1,"cluster":"east","domain":"cluster.local","savedAt":"2026-11-27T09:00:00Z","services":[],"x":1}`, "unknown field"},
		"trailing": {`{"version":1,"cluster":"east","domain":"cluster.local","savedAt":"2026-11-27T09:00:00Z","services":[]} {}`, "trailing"},
		"address": {`{"version":1,"cluster":"east","domain":"cluster.local","savedAt":"2026-11-27T09:00:00Z","services":[
			{"namespace":"demo","name":"echo","port":1,"endpoints":[{"address":"010.0.0.1","port":1,"ready":true}]}]}`, "services[0].endpoints[0].address"},
		"port": {`{"version":1,"cluster":"east","domain":"cluster.local","savedAt":"2026-11-27T09:00:00Z","services":[
			{"namespace":"demo","name":"echo","port":70000,"endpoints":[]}]}`, "services[0].port"},
		"dup": {`{"version":1,"cluster":"east","domain":"cluster.local","savedAt":"2026-11-27T09:00:00Z","services":[
			{"namespace":"demo","name":"echo","port":1,"endpoints":[{"address":"10.0.0.1","port":1},{"address":"10.0.0.1","port":1}]}]}`, "listed twice"},
		"name": {`{"version":1,"cluster":"east","domain":"cluster.local","savedAt":"2026-11-27T09:00:00Z","services":[
			{"namespace":"Demo","name":"echo","port":1,"endpoints":[]}]}`, "DNS labels"},
		"hbone": {`{"version":1,"cluster":"east","domain":"cluster.local","savedAt":"2026-11-27T09:00:00Z","services":[
			{"namespace":"demo","name":"echo","port":1,"endpoints":[{"address":"10.0.0.1","port":1,"hbonePort":70000}]}]}`, "HBONE port 70000"},
	} {
		if _, _, err := parseCache([]byte(tc.data), "east", "cluster.local"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}

// FuzzParseCache: any bytes as a cache file never panic, and an accepted one is a table
// the gateway takes, which encodes back to the same table.
func FuzzParseCache(f *testing.F) {
	tbl := &eastwest.RouteTable{Services: map[eastwest.ServiceKey][]eastwest.Endpoint{
		{Namespace: "demo", Name: "echo", Port: 8443}: {{Address: "10.0.0.1", Port: 9443, Zone: "z1", Ready: true, Weight: 2}}}}
	data, _ := encodeCache(tbl, "east", "cluster.local", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	f.Add(data)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"version":1,"cluster":"east","domain":"cluster.local","savedAt":"2026-11-27T09:00:00Z","services":[{"namespace":"a","name":"b","port":1,"endpoints":[{"address":"::1","port":2}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, saved, err := parseCache(data, "east", "cluster.local")
		if err != nil {
			return
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("accepted a table the gateway refuses: %v", err)
		}
		again, err := encodeCache(got, "east", "cluster.local", saved)
		if err != nil {
			t.Fatal(err)
		}
		back, _, err := parseCache(again, "east", "cluster.local")
		if err != nil || !sameRoutes(back, got) {
			t.Fatalf("re-encoded cache differs: %v", err)
		}
	})
}
