package harness_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshfed/meshfed/federation/istio"
	"github.com/meshfed/meshfed/harness"
)

// TestIstioMCPSubjectAltNames: the exports' service accounts reach the ServiceEntry east's
// federation serves istiod, end to end (file source -> export records in etcd -> east's
// plan -> MCP state): with north's accounts unknown there are none (sidecars check roots
// only); once north names its account, the SANs are both clusters' SPIFFE IDs, each in its
// own trust domain.
func TestIstioMCPSubjectAltNames(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a federation")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	exports := func(addr, sa string) string {
		ep := "{address: " + addr + "}"
		if sa != "" {
			ep = "{address: " + addr + ", serviceAccount: " + sa + "}"
		}
		return fmt.Sprintf("services:\n  - name: echo\n    namespace: demo\n    ports: [{name: tls, port: 8443}]\n    endpoints: [%s]\n", ep)
	}
	f, err := harness.Start(ctx, harness.Options{Clusters: []harness.ClusterSpec{
		{Name: "east", IstioMCP: true},
		{Name: "west", Exports: exports("127.0.1.1", "echo")},
		{Name: "north", Region: "region-2", Exports: exports("127.0.2.1", "")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	srv := f.Cluster("east").Agent().Istio
	sans := func() (string, error) {
		st := srv.State()
		if st == nil {
			return "", fmt.Errorf("no state")
		}
		rs, err := st.Resources(istio.TypeServiceEntry)
		if err != nil {
			return "", err
		}
		if len(rs) != 1 {
			return "", fmt.Errorf("%d ServiceEntries", len(rs))
		}
		se := &networking.ServiceEntry{}
		if err := rs[0].GetBody().UnmarshalTo(se); err != nil {
			return "", err
		}
		return fmt.Sprint(se.GetSubjectAltNames()), nil
	}
	wait := func(what, want string) {
		t.Helper()
		start := time.Now()
		deadline := time.After(30 * time.Second)
		for {
			ch := srv.StatusChanged()
			got, err := sans()
			if err == nil && got == want {
				t.Logf("%s: in the MCP state after %v", what, time.Since(start).Round(time.Millisecond))
				return
			}
			select {
			case <-ch:
			case <-time.After(100 * time.Millisecond): // the state may change without a status change
			case <-deadline:
				t.Fatalf("%s: subjectAltNames %s (%v), want %s", what, got, err, want)
			}
		}
	}
	wait("north's accounts unknown: none", "[]")
	if err := f.Cluster("north").SetExports(exports("127.0.2.1", "echo-north")); err != nil {
		t.Fatal(err)
	}
	want := []string{"spiffe://north.meshfed.test/ns/demo/sa/echo-north", "spiffe://west.meshfed.test/ns/demo/sa/echo"}
	if !slices.IsSorted(want) {
		t.Fatal("fixture: want must be sorted")
	}
	wait("north names its account", fmt.Sprint(want))
}
