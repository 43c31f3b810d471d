package istio

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshfed/meshfed/federation/planner"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/view"
)

func ambientExport(cluster string, eps ...records.Endpoint) *view.ClusterExport {
	return &view.ClusterExport{Cluster: cluster, Export: &records.Export{Cluster: cluster, Namespace: "demo", Name: "echo", Endpoints: eps}}
}

func ambientView() *view.View {
	hb := func(addr string, ready bool) records.Endpoint {
		return records.Endpoint{Address: addr, Ready: ready, HBONEPort: 15008, ServiceAccount: "echo"}
	}
	ports := []records.Port{{Name: "https", Port: 8443, Protocol: "TCP"}, {Name: "dns", Port: 53, Protocol: "UDP"}}
	return &view.View{
		Services: map[string]*view.Service{
			"demo/echo": {Namespace: "demo", Name: "echo", Ports: ports, Clusters: []*view.ClusterExport{
				ambientExport("east", hb("10.0.0.1", true)), // self: never
				ambientExport("north", hb("10.2.0.1", true), hb("10.2.0.2", false), // 1 ready HBONE endpoint
					records.Endpoint{Address: "10.2.0.3", Ready: true}), // no HBONE port: not counted
				ambientExport("south", records.Endpoint{Address: "10.3.0.1", Ready: true}), // no HBONE endpoint: none
				ambientExport("west", hb("10.1.0.1", true), records.Endpoint{Address: "10.1.0.2", Ready: true, HBONEPort: 15008, ServiceAccount: "echo-canary"},
					records.Endpoint{Address: "10.1.0.3", Ready: false, HBONEPort: 15008, ServiceAccount: "echo-old"}, // not ready: not a SAN
					records.Endpoint{Address: "10.1.0.4", Ready: true}),                                               // no HBONE port: its unknown account does not matter
				ambientExport("far", hb("10.4.0.1", true)), // no Gateway here (not in networks): none
				// Ready HBONE endpoints without a service account: ztunnel would refuse them, so
				// no WorkloadEntry (SkipNoServiceAccount).
				ambientExport("nosa", records.Endpoint{Address: "10.5.0.1", Ready: true, HBONEPort: 15008},
					records.Endpoint{Address: "10.5.0.2", Ready: true, HBONEPort: 15008, ServiceAccount: "echo"}),
				// No cluster record here: its trust domain, so its SPIFFE IDs, are unknown.
				ambientExport("norec", hb("10.6.0.1", true)),
			}},
			"demo/cordoned": {Namespace: "demo", Name: "cordoned", Ports: ports, Clusters: []*view.ClusterExport{
				{Cluster: "west", Export: &records.Export{Cluster: "west", Namespace: "demo", Name: "cordoned", Endpoints: []records.Endpoint{hb("10.1.0.9", true)}}},
			}},
			"demo/udp": {Namespace: "demo", Name: "udp", Ports: []records.Port{{Name: "dns", Port: 53, Protocol: "UDP"}}, Clusters: []*view.ClusterExport{
				{Cluster: "west", Export: &records.Export{Cluster: "west", Namespace: "demo", Name: "udp", Endpoints: []records.Endpoint{hb("10.1.0.8", true)}}},
			}},
		},
		Clusters: map[string]*records.Cluster{
			"west": {Name: "west", Network: "net-west", Region: "r1", Zone: "r1-b", TrustDomain: "mesh.example"},
			// north shares west's trust domain (its record holds the owner's).
			"north": {Name: "north", Network: "net-north", Region: "r2", Zone: "r2-a", TrustDomain: "mesh.example", SharesTrustDomainWith: "west"},
			"nosa":  {Name: "nosa", Network: "net-nosa", Region: "r3", Zone: "r3-a", TrustDomain: "mesh.example", SharesTrustDomainWith: "west"},
		},
		Drills: []*records.Drill{{Cluster: "west", Namespace: "demo", Service: "cordoned"}},
	}
}

func TestBuildAmbient(t *testing.T) {
	v := ambientView()
	if !v.Cordoned("west", "demo", "cordoned") {
		t.Fatal("fixture: the drill does not cordon demo/cordoned in west")
	}
	nets := map[string]string{"west": "net-west", "north": "net-north", "south": "net-south", "east": "net-east", "nosa": "net-nosa", "norec": "net-norec"}
	res, skips, err := BuildAmbientSkips(v, "east", nets, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantSkips := []Skip{{Service: "demo/echo", Cluster: "nosa", Reason: SkipNoServiceAccount}, {Service: "demo/echo", Cluster: "norec", Reason: SkipNoServiceAccount}}
	if !slices.Equal(skips, wantSkips) {
		t.Errorf("skips %+v, want %+v", skips, wantSkips)
	}
	if len(res[TypeServiceEntry]) != 1 || len(res[TypeWorkloadEntry]) != 2 || len(res) != 2 {
		t.Fatalf("resources %v", res)
	}
	r := res[TypeServiceEntry][0]
	if r.GetMetadata().GetName() != "demo/meshfed-echo" || r.GetMetadata().GetLabels()[LabelManagedBy] != "meshfed" {
		t.Errorf("service entry metadata %v", r.GetMetadata())
	}
	se := &networking.ServiceEntry{}
	if err := r.GetBody().UnmarshalTo(se); err != nil {
		t.Fatal(err)
	}
	// Host, ports, location, resolution and (no) addresses are BuildService's, unchanged.
	mcpRes, _, err := BuildService(echoPlan(planner.Level{Cluster: "east", Direct: true}, gw("west", "r1", "r1-b", 2, "127.0.0.21")), BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mcpSE := &networking.ServiceEntry{}
	if err := mcpRes[TypeServiceEntry][0].GetBody().UnmarshalTo(mcpSE); err != nil {
		t.Fatal(err)
	}
	if mcpRes[TypeServiceEntry][0].GetMetadata().GetName() != r.GetMetadata().GetName() {
		t.Errorf("names differ: MCP %s, Kubernetes %s (the MCP one must hide the Kubernetes one from Envoy proxies)",
			mcpRes[TypeServiceEntry][0].GetMetadata().GetName(), r.GetMetadata().GetName())
	}
	if !slices.Equal(se.GetHosts(), mcpSE.GetHosts()) || !slices.Equal(se.GetAddresses(), mcpSE.GetAddresses()) ||
		se.GetLocation() != mcpSE.GetLocation() || se.GetResolution() != mcpSE.GetResolution() ||
		len(se.GetPorts()) != len(mcpSE.GetPorts()) || !proto.Equal(se.GetPorts()[0], mcpSE.GetPorts()[0]) {
		t.Errorf("Kubernetes ServiceEntry %v differs from the MCP one %v", se, mcpSE)
	}
	if want := []string{"echo.demo.svc.cluster.local"}; !slices.Equal(se.GetHosts(), want) || len(se.GetAddresses()) != 0 {
		t.Errorf("hosts %v addresses %v", se.GetHosts(), se.GetAddresses())
	}
	// subjectAltNames: the SPIFFE IDs of the ready HBONE endpoints of the clusters that got a
	// WorkloadEntry (north's in the trust domain it shares with west), sorted, each once.
	wantSANs := []string{"spiffe://mesh.example/ns/demo/sa/echo", "spiffe://mesh.example/ns/demo/sa/echo-canary"}
	if !slices.Equal(se.GetSubjectAltNames(), wantSANs) {
		t.Errorf("subjectAltNames %q, want %q (ztunnel refuses a destination whose SPIFFE ID is not listed)", se.GetSubjectAltNames(), wantSANs)
	}
	if !slices.Equal(se.GetExportTo(), []string{"~"}) {
		t.Errorf("exportTo %v, want [~] (no Envoy proxy may see it)", se.GetExportTo())
	}
	sel := se.GetWorkloadSelector().GetLabels()
	if len(sel) != 1 || sel[LabelAmbientService] != "echo" || sel[LabelService] != "" {
		t.Errorf("selector %v: must select the ambient entries only", sel)
	}

	type want struct {
		network, locality string
		weight            uint32
	}
	wants := map[string]want{"north": {"net-north", "r2/r2-a/north", 1}, "west": {"net-west", "r1/r1-b/west", 2}}
	for _, r := range res[TypeWorkloadEntry] {
		we := &networking.WorkloadEntry{}
		if err := r.GetBody().UnmarshalTo(we); err != nil {
			t.Fatal(err)
		}
		c := we.GetLabels()[LabelCluster]
		w, ok := wants[c]
		if !ok {
			t.Errorf("workload entry for %q: %v", c, we)
			continue
		}
		delete(wants, c)
		if we.GetNetwork() != w.network || we.GetLocality() != w.locality || we.GetWeight() != w.weight {
			t.Errorf("%s: network %q locality %q weight %d, want %+v", c, we.GetNetwork(), we.GetLocality(), we.GetWeight(), w)
		}
		// No address: ztunnel reaches it only through the network gateway, and an address
		// would shadow the gateway's own workload at the same IP.
		if we.GetAddress() != "" || we.GetServiceAccount() != "" {
			t.Errorf("%s: address %q service account %q", c, we.GetAddress(), we.GetServiceAccount())
		}
		if !selects(sel, we.GetLabels()) || selects(map[string]string{LabelService: "echo"}, we.GetLabels()) {
			t.Errorf("%s: labels %v: the ambient selector must pick it, the MCP one must not", c, we.GetLabels())
		}
		if !selects(sel, r.GetMetadata().GetLabels()) || r.GetMetadata().GetLabels()[LabelManagedBy] != "meshfed" {
			t.Errorf("%s: metadata labels %v", c, r.GetMetadata().GetLabels())
		}
	}
	if len(wants) != 0 {
		t.Errorf("missing workload entries for %v", wants)
	}

	// Same input, same resources; no networks or no view, nothing.
	again, _ := BuildAmbient(ambientView(), "east", nets, BuildOptions{})
	for typ, rs := range res {
		for i := range rs {
			// Metadata holds the name, the labels and the version (a hash of the content).
			if !proto.Equal(rs[i].GetMetadata(), again[typ][i].GetMetadata()) {
				t.Errorf("%s %d differs between two builds", typ, i)
			}
		}
	}
	if r, _ := BuildAmbient(v, "east", nil, BuildOptions{}); len(r) != 0 {
		t.Errorf("no networks: %v", r)
	}
	if r, _ := BuildAmbient(nil, "east", nets, BuildOptions{}); len(r) != 0 {
		t.Errorf("no view: %v", r)
	}
	if n := ambientEntryName("demo", "a-b", "c"); n == ambientEntryName("demo", "a", "b-c") {
		t.Errorf("names collide: %s", n)
	}
}

func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return len(selector) > 0
}
