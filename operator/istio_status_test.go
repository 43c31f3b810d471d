package operator

import (
	"strings"
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

// TestIstioStatusTableRoots: the text table of `meshfed status` shows, per istiod, the
// number of roots it gives its proxies and their short fingerprints (as `meshfed trust
// status` names roots), the last roots and the error of a failing probe, "no answer yet"
// before the first answer, and "-" without a probe.
func TestIstioStatusTableRoots(t *testing.T) {
	now := time.Date(2026, 12, 2, 18, 0, 0, 0, time.UTC)
	since := now.Add(-3 * time.Minute)
	fp1 := "sha256:1a2b3c4d5e6f70819293a4b5c6d7e8f9" + strings.Repeat("0", 32)
	fp2 := "sha256:ffee0011" + strings.Repeat("2", 56)
	items := []*store.Item[records.IstioStatus]{{Value: &records.IstioStatus{Cluster: "east", Instance: "fed-0", Istiods: []records.IstiodStatus{
		{Node: "istiod-0", Synced: true, Roots: &records.IstiodRoots{Addr: "10.0.0.1:15010", Fingerprints: []string{fp1, fp2}, Since: since}},
		{Node: "istiod-1", Roots: &records.IstiodRoots{Addr: "10.0.0.2:15010", Fingerprints: []string{fp1}, Since: since, Error: "stream ended: EOF"}},
		{Node: "istiod-2", Roots: &records.IstiodRoots{Addr: "10.0.0.3:15010", Fingerprints: []string{}, Error: "connection refused"}},
		{Node: "istiod-3", Roots: &records.IstiodRoots{Addr: "10.0.0.4:15010", Fingerprints: []string{}}},
		{Node: "istiod-4", Roots: &records.IstiodRoots{Addr: "10.0.0.5:15010", Fingerprints: []string{}, Since: since}},
		{Node: "istiod-5"},
	}}}}
	s := &Status{Time: now, Clusters: []ClusterStatus{{Name: "east", Istio: istioStatus(items)}, {Name: "west"}}}
	var b strings.Builder
	if err := s.writeIstio(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	rows := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "east" {
			rows[f[1]] = l
		}
	}
	for node, want := range map[string]string{
		"istiod-0": "  2: 1a2b3c4d… ffee0011…",
		"istiod-1": "  probe failing (last received 1: 1a2b3c4d…)",
		"istiod-2": "  probe failing",
		"istiod-3": "  no answer yet",
		"istiod-4": "  none",
		"istiod-5": "  -",
	} {
		if !strings.HasSuffix(rows[node], want) {
			t.Errorf("%s: row %q does not end in %q:\n%s", node, rows[node], want, out)
		}
	}
	for _, want := range []string{"ROOTS (PCDS)",
		"roots probe of istiod istiod-1 (cluster east) at 10.0.0.2:15010: stream ended: EOF\n",
		"roots probe of istiod istiod-2 (cluster east) at 10.0.0.3:15010: connection refused\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "roots probe of") != 2 {
		t.Errorf("want the 2 failing probes' errors, got:\n%s", out)
	}
	t.Logf("\n%s", out)
}
