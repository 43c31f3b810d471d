package istio

import (
	"bytes"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshfed/meshfed/federation/planner"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/view"
)

func saEndpoint(addr string, ready bool, sa string) records.Endpoint {
	return records.Endpoint{Address: addr, Ready: ready, ServiceAccount: sa}
}

func identityClusters() map[string]*records.Cluster {
	return map[string]*records.Cluster{
		"east":  {Name: "east", TrustDomain: "east.example"},
		"west":  {Name: "west", TrustDomain: "west.example"},
		"north": {Name: "north", TrustDomain: "west.example", SharesTrustDomainWith: "west"},
		"south": {Name: "south", TrustDomain: "south.example"},
	}
}

func TestServiceIdentities(t *testing.T) {
	svc := func(ces ...*view.ClusterExport) *view.Service {
		return &view.Service{Namespace: "demo", Name: "echo", Clusters: ces}
	}
	for _, tc := range []struct {
		name    string
		svc     *view.Service
		sans    []string
		unknown []string
	}{
		{"each remote cluster's trust domain, sorted, once", svc(
			ambientExport("east", saEndpoint("10.0.0.1", true, "local-only")), // self: never
			ambientExport("west", saEndpoint("10.1.0.1", true, "echo"), saEndpoint("10.1.0.2", true, "echo"), saEndpoint("10.1.0.3", true, "canary")),
			ambientExport("south", saEndpoint("10.3.0.1", true, "echo")),
		), []string{"spiffe://south.example/ns/demo/sa/echo", "spiffe://west.example/ns/demo/sa/canary", "spiffe://west.example/ns/demo/sa/echo"}, nil},
		{"a sharer's workloads are in the owner's trust domain", svc(
			ambientExport("north", saEndpoint("10.2.0.1", true, "echo")),
		), []string{"spiffe://west.example/ns/demo/sa/echo"}, nil},
		{"only ready endpoints count", svc(
			ambientExport("west", saEndpoint("10.1.0.1", true, "echo"), saEndpoint("10.1.0.2", false, "old"), saEndpoint("10.1.0.3", false, "")),
		), []string{"spiffe://west.example/ns/demo/sa/echo"}, nil},
		{"a ready endpoint without an account makes its cluster unknown", svc(
			ambientExport("west", saEndpoint("10.1.0.1", true, "echo")),
			ambientExport("south", saEndpoint("10.3.0.1", true, "echo"), saEndpoint("10.3.0.2", true, "")),
		), []string{"spiffe://west.example/ns/demo/sa/echo"}, []string{"south"}},
		{"no cluster record: unknown trust domain", svc(
			ambientExport("gone", saEndpoint("10.9.0.1", true, "echo")),
		), nil, []string{"gone"}},
		{"no ready endpoint: nothing to say", svc(
			ambientExport("west", saEndpoint("10.1.0.1", false, "")),
		), nil, nil},
		{"no service", nil, nil, nil},
	} {
		got := ServiceIdentities(tc.svc, identityClusters(), "east")
		if !slices.Equal(got.SANs, tc.sans) || !slices.Equal(got.Unknown, tc.unknown) {
			t.Errorf("%s: %+v, want SANs %q unknown %q", tc.name, got, tc.sans, tc.unknown)
		}
	}
}

// BuildService puts the identities into the MCP ServiceEntry's subjectAltNames, all or
// nothing: with one remote cluster's unknown, none (the sidecars check roots only), and a
// skip per such cluster.
func TestBuildServiceSubjectAltNames(t *testing.T) {
	local := planner.Level{Cluster: "east", Direct: true, Weight: 1, Endpoints: []planner.Endpoint{{Host: "10.0.0.1", Port: 8443}}}
	sans := []string{"spiffe://west.example/ns/demo/sa/canary", "spiffe://west.example/ns/demo/sa/echo"}
	for _, tc := range []struct {
		name  string
		ids   Identities
		want  []string
		skips []Skip
	}{
		{"known", Identities{SANs: sans}, sans, nil},
		{"one cluster unknown", Identities{SANs: sans, Unknown: []string{"north"}}, nil,
			[]Skip{{Service: "demo/echo", Cluster: "north", Reason: SkipNoServiceAccount}}},
		{"none given", Identities{}, nil, nil},
	} {
		svc := echoPlan(local, gw("west", "r1", "r1-b", 2, "127.0.0.21"))
		svc.Identities = tc.ids
		res, skips, err := BuildService(svc, BuildOptions{})
		if err != nil {
			t.Fatal(err)
		}
		se := &networking.ServiceEntry{}
		if err := res[TypeServiceEntry][0].GetBody().UnmarshalTo(se); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(se.GetSubjectAltNames(), tc.want) || !slices.Equal(skips, tc.skips) {
			t.Errorf("%s: subjectAltNames %q skips %+v; want %q %+v", tc.name, se.GetSubjectAltNames(), skips, tc.want, tc.skips)
		}
	}
}

// A service whose remote clusters all lack accounts gets no ambient entries at all (no
// ServiceEntry without a WorkloadEntry), and a skip per cluster.
func TestBuildAmbientWithoutServiceAccounts(t *testing.T) {
	v := &view.View{
		Services: map[string]*view.Service{"demo/echo": {Namespace: "demo", Name: "echo", Ports: []records.Port{{Name: "https", Port: 8443, Protocol: "TCP"}},
			Clusters: []*view.ClusterExport{ambientExport("west", records.Endpoint{Address: "10.1.0.1", Ready: true, HBONEPort: 15008})}}},
		Clusters: identityClusters(),
	}
	res, skips, err := BuildAmbientSkips(v, "east", map[string]string{"west": "net-west"}, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res[TypeServiceEntry]) != 0 || len(res[TypeWorkloadEntry]) != 0 {
		t.Errorf("resources %v, want none", res)
	}
	if want := []Skip{{Service: "demo/echo", Cluster: "west", Reason: SkipNoServiceAccount}}; !slices.Equal(skips, want) {
		t.Errorf("skips %+v, want %+v", skips, want)
	}
}

// SkipReporter: one warning and one count per skip when it appears, naming the service,
// the cluster and the fix; nothing while it stays; again after it went and came back.
func TestSkipReporter(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	reg := prometheus.NewRegistry()
	r, err := NewAmbientSkipReporter(log, reg)
	if err != nil {
		t.Fatal(err)
	}
	a := Skip{Service: "demo/echo", Cluster: "west", Reason: SkipNoServiceAccount}
	b := Skip{Service: "demo/other", Cluster: "west", Reason: SkipNoServiceAccount}
	count := func() float64 {
		n, err := testutil.GatherAndCount(reg, "meshfed_istio_ambient_skipped_total")
		if err != nil || n == 0 {
			return 0
		}
		mfs, _ := reg.Gather()
		return mfs[0].GetMetric()[0].GetCounter().GetValue()
	}
	r.Report([]Skip{a, a})
	r.Report([]Skip{a})
	if c := count(); c != 1 || strings.Count(buf.String(), "level=WARN") != 1 {
		t.Fatalf("count %v, log:\n%s", c, buf.String())
	}
	line := buf.String()
	for _, want := range []string{"service=demo/echo", "cluster=west", "reason=no-service-account", "serviceAccount", "exports file", "roots only", "ztunnel"} {
		if !strings.Contains(line, want) {
			t.Errorf("warning does not say %q:\n%s", want, line)
		}
	}
	r.Report([]Skip{b})    // a went, b came
	r.Report([]Skip{a, b}) // a came back
	if c := count(); c != 3 || strings.Count(buf.String(), "level=WARN") != 3 {
		t.Fatalf("count %v, log:\n%s", c, buf.String())
	}
}
