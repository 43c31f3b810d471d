package operator

import (
	"testing"
	"time"

	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
)

// TestIstioStatusRoots: the roots a replica's probe saw of each istiod's PCDS are in
// `meshfed status -o json` (clusters[].istio.istiods[].roots); an istiod without a probe has
// none.
func TestIstioStatusRoots(t *testing.T) {
	since := time.Date(2026, 12, 2, 17, 0, 0, 0, time.UTC)
	fp := "sha256:ab12"
	items := []*store.Item[records.IstioStatus]{{Value: &records.IstioStatus{Cluster: "east", Instance: "fed-0", Istiods: []records.IstiodStatus{
		{Node: "istiod-0", Roots: &records.IstiodRoots{Addr: "10.0.0.1:15010", Fingerprints: []string{fp}, Since: since}},
		{Node: "istiod-1", Roots: &records.IstiodRoots{Addr: "10.0.0.2:15010", Fingerprints: []string{}, Error: "connection refused"}},
		{Node: "istiod-2"},
	}}}}
	is := istioStatus(items)
	if len(is.Istiods) != 3 {
		t.Fatalf("istiods %+v", is.Istiods)
	}
	r0, r1, r2 := is.Istiods[0].Roots, is.Istiods[1].Roots, is.Istiods[2].Roots
	if r0 == nil || r0.Addr != "10.0.0.1:15010" || len(r0.Fingerprints) != 1 || r0.Fingerprints[0] != fp || r0.Since == nil || !r0.Since.Equal(since) || r0.Error != "" {
		t.Errorf("istiod-0 roots %+v", r0)
	}
	if r1 == nil || r1.Error != "connection refused" || r1.Since != nil || len(r1.Fingerprints) != 0 {
		t.Errorf("istiod-1 roots %+v", r1)
	}
	if r2 != nil {
		t.Errorf("istiod-2 (no probe) roots %+v", r2)
	}
}
