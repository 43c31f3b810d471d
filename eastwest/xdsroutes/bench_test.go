package xdsroutes

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshfed/meshfed/api/exports"
	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/eastwest"
)

// benchResponses is a cluster's worth of exports: n services (one port each) with eps
// endpoints, as the CDS and EDS responses the federation sends on connect.
func benchResponses(b *testing.B, n, eps int) (cds, eds *discoveryv3.DiscoveryResponse, one func(svc, v int) *discoveryv3.DiscoveryResponse) {
	cds = &discoveryv3.DiscoveryResponse{TypeUrl: resourcev3.ClusterType, VersionInfo: "c1", Nonce: "1"}
	eds = &discoveryv3.DiscoveryResponse{TypeUrl: resourcev3.EndpointType, VersionInfo: "e1", Nonce: "2"}
	claOf := func(i, v int) *anypb.Any {
		name := names.InboundClusterName("ns", fmt.Sprintf("svc-%d", i), 8443, "")
		var lbs []*endpointv3.LbEndpoint
		for j := 0; j < eps; j++ {
			h := corev3.HealthStatus_HEALTHY
			if j == v%eps {
				h = corev3.HealthStatus_UNHEALTHY
			}
			lbs = append(lbs, lbEndpoint(fmt.Sprintf("10.%d.%d.%d", i/250, i%250, j+1), 9443, h, 1))
		}
		return anyOf(b, &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{locality("z1", 0, lbs...)}})
	}
	for i := 0; i < n; i++ {
		cds.Resources = append(cds.Resources, anyOf(b, edsCluster(names.InboundClusterName("ns", fmt.Sprintf("svc-%d", i), 8443, ""))))
		eds.Resources = append(eds.Resources, claOf(i, 0))
	}
	// one is an EDS answer carrying service svc with endpoint v%eps unhealthy.
	one = func(svc, v int) *discoveryv3.DiscoveryResponse {
		return &discoveryv3.DiscoveryResponse{TypeUrl: resourcev3.EndpointType, VersionInfo: fmt.Sprint("e", v+2), Nonce: fmt.Sprint(v + 3),
			Resources: []*anypb.Any{claOf(svc%n, v)}}
	}
	return cds, eds, one
}

func benchSource(b *testing.B) *Source {
	s, err := New(Config{Address: "127.0.0.1:1", Cluster: "east", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkFullState: the CDS and EDS of n services arriving on a new stream, decoded,
// checked and turned into the table put in force.
func BenchmarkFullState(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			cds, eds, _ := benchResponses(b, n, 4)
			s := benchSource(b)
			tables := 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s.table = nil
				st := &stream{s: s, endpoints: map[string][]eastwest.Endpoint{}}
				st.onCDS(cds)
				st.onEDS(eds)
				st.publish(func(*eastwest.RouteTable) { tables++ }, false)
			}
			if tables != b.N {
				b.Fatalf("%d tables for %d rounds", tables, b.N)
			}
		})
	}
}

// BenchmarkOneServiceUpdate: one service's endpoints change (one EDS resource) among n.
func BenchmarkOneServiceUpdate(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			cds, eds, one := benchResponses(b, n, 4)
			s := benchSource(b)
			st := &stream{s: s, endpoints: map[string][]eastwest.Endpoint{}}
			st.onCDS(cds)
			st.onEDS(eds)
			st.publish(func(*eastwest.RouteTable) {}, false)
			// 64 services flip between two endpoint states: every answer is a real change.
			updates := make([]*discoveryv3.DiscoveryResponse, 128)
			for i := range updates {
				updates[i] = one(i%64, 1+(i/64)%2)
			}
			tables := 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				st.onEDS(updates[i%len(updates)])
				st.publish(func(*eastwest.RouteTable) { tables++ }, false)
			}
			if tables != b.N {
				b.Fatalf("%d tables for %d changes", tables, b.N)
			}
		})
	}
}

// BenchmarkFileSourceBaseline is the baseline of bench/50-gateway-xds.sh: the same table
// (n services, 4 endpoints each) from an exports file, parsed and validated as the file
// source does on a reload.
func BenchmarkFileSourceBaseline(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			var y strings.Builder
			y.WriteString("services:\n")
			for i := 0; i < n; i++ {
				fmt.Fprintf(&y, "  - name: svc-%d\n    namespace: ns\n    ports: [{port: 8443, targetPort: 9443}]\n    endpoints:\n", i)
				for j := 0; j < 4; j++ {
					fmt.Fprintf(&y, "      - {address: 10.%d.%d.%d, zone: z1, ready: %t}\n", i/250, i%250, j+1, j != 0)
				}
			}
			data := []byte(y.String())
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				f, err := exports.Parse(data)
				if err != nil {
					b.Fatal(err)
				}
				if t := eastwest.TableFromExports(f, "bench"); t.Len() != n {
					b.Fatalf("%d routes", t.Len())
				}
			}
		})
	}
}
