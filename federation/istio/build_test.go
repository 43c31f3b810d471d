package istio

import (
	"slices"
	"testing"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshfed/meshfed/federation/planner"
)

func TestBuildService(t *testing.T) {
	local := planner.Level{Cluster: "east", Direct: true, Weight: 4, Endpoints: []planner.Endpoint{{Host: "10.0.0.1", Port: 8443}}}
	svc := echoPlan(local, gw("west", "r1", "r1-b", 2, "127.0.0.21", "127.0.0.22"), gw("north", "r2", "r2-a", 3, "gw.north.example"))
	res, skips, err := BuildService(svc, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(skips) != 1 || skips[0].Reason != SkipGatewayHostname || skips[0].Cluster != "north" {
		t.Errorf("skips %+v", skips)
	}
	if len(res[TypeServiceEntry]) != 1 || len(res[TypeDestinationRule]) != 1 || len(res[TypeWorkloadEntry]) != 2 {
		t.Fatalf("resources %v", res)
	}
	dr := &networking.DestinationRule{}
	if err := res[TypeDestinationRule][0].GetBody().UnmarshalTo(dr); err != nil {
		t.Fatal(err)
	}
	fp := dr.GetTrafficPolicy().GetLoadBalancer().GetLocalityLbSetting().GetFailoverPriority()
	if want := []string{LabelRankPrefix + "2=", LabelRankPrefix + "1="}; !slices.Equal(fp, want) {
		t.Errorf("failoverPriority %v, want %v", fp, want)
	}
	if dr.GetTrafficPolicy().GetOutlierDetection() == nil {
		t.Error("no outlierDetection: Istio would not apply the priorities")
	}
	for i, r := range res[TypeWorkloadEntry] {
		we := &networking.WorkloadEntry{}
		if err := r.GetBody().UnmarshalTo(we); err != nil {
			t.Fatal(err)
		}
		if we.GetLabels()[LabelRankPrefix+"1"] != "true" || we.GetWeight() != 2 || we.GetPorts()["https"] != 15443 ||
			we.GetLocality() != "r1/r1-b/west" || we.GetLabels()["security.istio.io/tlsMode"] != "istio" {
			t.Errorf("workload entry %d: %v", i, we)
		}
		// No network: a network would make istiod swap the entry for that network's
		// gateways in sidecars' EDS, and the istio-remote Gateway meshfed writes for an
		// ambient remote network points at its HBONE port, where a sidecar's SNI mTLS is
		// refused (BuildService).
		if want := []string{"127.0.0.21", "127.0.0.22"}[i]; we.GetNetwork() != "" || we.GetAddress() != want {
			t.Errorf("workload entry %d: network %q address %q, want no network and %s", i, we.GetNetwork(), we.GetAddress(), want)
		}
	}
	// Same plan, same versions; nothing remote, nothing at all.
	again, _, _ := BuildService(svc, BuildOptions{})
	if again[TypeWorkloadEntry][0].GetMetadata().GetVersion() != res[TypeWorkloadEntry][0].GetMetadata().GetVersion() {
		t.Error("versions differ for the same content")
	}
	if r, _, _ := BuildService(echoPlan(local), BuildOptions{}); len(r) != 0 {
		t.Errorf("local only: %v", r)
	}
}

// The same plan built twice is the same bytes, so a State's versions are equal in every
// process (federation replicas, the relay beside istiod): no map order leaks into a body.
func TestBuildDeterministic(t *testing.T) {
	versions := map[string]bool{}
	for range 30 {
		svc := echoPlan(gw("west", "r1", "r1-b", 2, "127.0.0.21", "127.0.0.22"), gw("north", "r2", "r2-a", 3, "127.0.0.31"))
		res, _, err := BuildService(svc, BuildOptions{})
		if err != nil {
			t.Fatal(err)
		}
		st, err := NewState(res)
		if err != nil {
			t.Fatal(err)
		}
		versions[st.Type(TypeWorkloadEntry).Version+" "+st.Type(TypeServiceEntry).Version+" "+st.Type(TypeDestinationRule).Version] = true
	}
	if len(versions) != 1 {
		t.Fatalf("%d different state versions from 30 builds of one plan", len(versions))
	}
}
