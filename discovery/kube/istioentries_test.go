package kube

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	mcp "istio.io/api/mcp/v1alpha1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/meshfed/meshfed/federation/istio"
	"github.com/meshfed/meshfed/internal/kubetest"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/view"
)

func ambientEntries() *IstioAmbientEntries {
	return &IstioAmbientEntries{Build: func(v *view.View, self string, networks map[string]string) (map[string][]*mcp.Resource, error) {
		return istio.BuildAmbient(v, self, networks, istio.BuildOptions{})
	}}
}

// hboneExport is an export whose first hbone ready endpoints take HBONE, then plain ready
// ones, then one not ready HBONE endpoint; the HBONE endpoints run as the service account
// named like the service.
func hboneExport(cluster, ns, name string, hbone, plain int, ports ...records.Port) *records.Export {
	e := remoteExport(cluster, ns, name, 0, ports...)
	e.Endpoints = nil
	for i := range hbone {
		e.Endpoints = append(e.Endpoints, records.Endpoint{Address: fmt.Sprintf("10.8.0.%d", i+1), Ready: true, HBONEPort: 15008, ServiceAccount: name})
	}
	for i := range plain {
		e.Endpoints = append(e.Endpoints, records.Endpoint{Address: fmt.Sprintf("10.8.1.%d", i+1), Ready: true})
	}
	e.Endpoints = append(e.Endpoints, records.Endpoint{Address: "10.8.2.1", HBONEPort: 15008, ServiceAccount: name})
	return e
}

// withoutAccounts clears e's service accounts (an exporter that does not know them).
func withoutAccounts(e *records.Export) *records.Export {
	for i := range e.Endpoints {
		e.Endpoints[i].ServiceAccount = ""
	}
	return e
}

// entryShape is what istiod's ambient index reads from the entries, as plain values.
type entryShape struct {
	Hosts, ExportTo, Ports, Addresses []string
	SANs                              []string
	Selector, Labels                  map[string]string
	Network, Locality, Address        string
	Weight                            int64
}

func entryShapeOf(u *unstructured.Unstructured) entryShape {
	var s entryShape
	spec, _ := u.Object["spec"].(map[string]any)
	strs := func(k string) []string {
		l, _, _ := unstructured.NestedStringSlice(spec, k)
		return l
	}
	s.Hosts, s.ExportTo, s.Addresses, s.SANs = strs("hosts"), strs("exportTo"), strs("addresses"), strs("subjectAltNames")
	ps, _, _ := unstructured.NestedSlice(spec, "ports")
	for _, p := range ps {
		m, _ := p.(map[string]any)
		s.Ports = append(s.Ports, fmt.Sprintf("%v:%v/%v", m["name"], m["number"], m["protocol"]))
	}
	s.Selector, _, _ = unstructured.NestedStringMap(spec, "workloadSelector", "labels")
	s.Labels, _, _ = unstructured.NestedStringMap(spec, "labels")
	s.Network, _, _ = unstructured.NestedString(spec, "network")
	s.Locality, _, _ = unstructured.NestedString(spec, "locality")
	s.Address, _, _ = unstructured.NestedString(spec, "address")
	s.Weight, _, _ = unstructured.NestedInt64(spec, "weight")
	return s
}

// TestDesiredEntries: the builder's resources become objects whose spec is the Istio CRD
// form (camelCase fields, enum names, integers as int64 like the informers hold them).
func TestDesiredEntries(t *testing.T) {
	v := buildView(1, []*records.Cluster{hboneCluster("east", "net-east", "192.0.2.30:15008"), hboneCluster("west", "net-west", "192.0.2.10:15008")},
		[]*records.Export{hboneExport("west", "demo", "echo", 2, 1, records.Port{Name: "https", Port: 8443, Protocol: "TCP", AppProtocol: "https"})})
	res, err := ambientEntries().Build(v, "east", map[string]string{"west": "net-west"})
	if err != nil {
		t.Fatal(err)
	}
	want, err := desiredEntries(res)
	if err != nil {
		t.Fatal(err)
	}
	se := want["networking.istio.io/v1/ServiceEntry"]["demo/meshfed-echo"]
	if se == nil || len(want["networking.istio.io/v1/ServiceEntry"]) != 1 || len(want["networking.istio.io/v1/WorkloadEntry"]) != 1 {
		t.Fatalf("objects %v", want)
	}
	if se.obj.GetAPIVersion() != "networking.istio.io/v1" || se.obj.GetKind() != "ServiceEntry" || se.obj.GetLabels()[LabelImportManagedBy] != ImportManagedByValue {
		t.Errorf("service entry %v", se.obj)
	}
	if loc, _, _ := unstructured.NestedString(se.obj.Object, "spec", "location"); loc != "MESH_INTERNAL" {
		t.Errorf("location %q", loc)
	}
	got := entryShapeOf(se.obj)
	wantSE := entryShape{Hosts: []string{"echo.demo.svc.cluster.local"}, ExportTo: []string{"~"}, Ports: []string{"https:8443/TLS"},
		SANs: []string{"spiffe://west.example.org/ns/demo/sa/echo"}, Selector: map[string]string{istio.LabelAmbientService: "echo"}}
	if !reflect.DeepEqual(got, wantSE) {
		t.Errorf("ServiceEntry\n got %+v\nwant %+v", got, wantSE)
	}
	for _, we := range want["networking.istio.io/v1/WorkloadEntry"] {
		got := entryShapeOf(we.obj)
		if got.Network != "net-west" || got.Weight != 2 || got.Locality != "r1/west-a/west" || got.Address != "" || got.Labels[istio.LabelAmbientService] != "echo" {
			t.Errorf("WorkloadEntry %s: %+v", we.obj.GetName(), got)
		}
		if _, ok := we.obj.Object["spec"].(map[string]any)["weight"].(int64); !ok {
			t.Errorf("weight is %T, want int64 (as the informer holds it: else every pass rewrites)", we.obj.Object["spec"].(map[string]any)["weight"])
		}
	}
	if _, err := desiredEntries(map[string][]*mcp.Resource{"networking.istio.io/v1/DestinationRule": {{}}}); err == nil {
		t.Error("a type the importer does not write was accepted")
	}
}

func TestImporterEntriesConfig(t *testing.T) {
	cfg := ImporterConfig{Cluster: "east", Kube: kubefake.NewClientset(), MCS: fakeMCS(), Dynamic: dynamicfake.NewSimpleDynamicClient(runtime.NewScheme()),
		IstioAmbientEntries: ambientEntries()}
	if _, err := NewImporter(cfg); err == nil || !strings.Contains(err.Error(), "IstioRemoteGateways") {
		t.Errorf("entries without Gateways: %v", err)
	}
	cfg.IstioRemoteGateways = &IstioRemoteGateways{}
	if _, err := NewImporter(cfg); err != nil {
		t.Errorf("entries with Gateways: %v", err)
	}
}

// testIstioAmbientEntries: with Istio's own CRDs (their schema and CEL rules validate what
// is written), the importer keeps one ServiceEntry per imported service that a remote
// cluster with an istio-remote Gateway serves over HBONE, and one WorkloadEntry per such
// cluster; repairs drift; leaves status and foreign objects alone; removes them on
// unexport, cordon and leave.
func testIstioAmbientEntries(t *testing.T, east *cluster) {
	ctx := context.Background()
	if east.api != nil { // nil: fake clients (TestIstioAmbientEntriesFakeClients), no CRDs
		if err := east.api.InstallGatewayCRD(ctx); err != nil {
			t.Fatal(err)
		}
		if err := east.api.InstallIstioEntryCRDs(ctx); err != nil {
			t.Fatal(err)
		}
	}
	east.ns(t, "istio-system")
	east.ns(t, "ambient")
	im := startImporter(t, east, func(c *ImporterConfig) {
		c.Dynamic = east.c.Dynamic
		c.IstioRemoteGateways = &IstioRemoteGateways{Namespace: "istio-system"}
		c.IstioAmbientEntries = ambientEntries()
	})
	seGVR, weGVR := istioEntryGVRs["networking.istio.io/v1/ServiceEntry"], istioEntryGVRs["networking.istio.io/v1/WorkloadEntry"]
	ses, wes := east.c.Dynamic.Resource(seGVR).Namespace("ambient"), east.c.Dynamic.Resource(weGVR).Namespace("ambient")
	list := func() (map[string]entryShape, map[string]entryShape, error) {
		sl, err := ses.List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, nil, err
		}
		wl, err := wes.List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, nil, err
		}
		s, w := map[string]entryShape{}, map[string]entryShape{}
		for i := range sl.Items {
			s[sl.Items[i].GetName()] = entryShapeOf(&sl.Items[i])
		}
		for i := range wl.Items {
			lb := wl.Items[i].GetLabels()
			w[lb[istio.LabelAmbientService]+"/"+lb[istio.LabelCluster]] = entryShapeOf(&wl.Items[i])
		}
		return s, w, nil
	}
	waitFor := func(what string, check func(s, w map[string]entryShape) error) {
		t.Helper()
		kubetest.Eventually(t, wait, func() error {
			s, w, err := list()
			if err != nil {
				return err
			}
			if err := check(s, w); err != nil {
				return fmt.Errorf("%s: %w\nServiceEntries %+v\nWorkloadEntries %+v", what, err, s, w)
			}
			return nil
		})
	}

	self := hboneCluster("east", "net-east", "192.0.2.30:15008")
	west := hboneCluster("west", "net-west", "192.0.2.10:15008")
	north := hboneCluster("north", "net-north")                      // no HBONE gateway: no Gateway, no entries
	south := hboneCluster("south", "net-east", "198.51.100.1:15008") // east's own network: none
	tcp := records.Port{Name: "tcp-echo", Port: 9000, Protocol: "TCP"}
	exports := func(extra ...*records.Export) []*records.Export {
		return append([]*records.Export{
			hboneExport("west", "ambient", "echo", 2, 1, tcp),
			hboneExport("north", "ambient", "echo", 3, 0, tcp),
			hboneExport("south", "ambient", "echo", 3, 0, tcp),
			hboneExport("west", "ambient", "plain", 0, 2, tcp), // no HBONE endpoint: nothing
			hboneExport("west", "missing-ns", "echo", 1, 0, tcp),
			// Ready HBONE endpoints without service accounts: ztunnel would refuse them, so
			// no entries (federation/istio.SkipNoServiceAccount).
			withoutAccounts(hboneExport("west", "ambient", "nosa", 2, 0, tcp)),
		}, extra...)
	}
	im.Update(buildView(1, []*records.Cluster{self, west, north, south}, exports()))
	wantSE := entryShape{Hosts: []string{"echo.ambient.svc.cluster.local"}, ExportTo: []string{"~"}, Ports: []string{"tcp-echo:9000/TCP"},
		SANs: []string{"spiffe://west.example.org/ns/ambient/sa/echo"}, Selector: map[string]string{istio.LabelAmbientService: "echo"}}
	wantWest := entryShape{Network: "net-west", Locality: "r1/west-a/west", Weight: 2,
		Labels: map[string]string{istio.LabelAmbientService: "echo", istio.LabelCluster: "west"}}
	want := func(s, w map[string]entryShape) error {
		if len(s) != 1 || !reflect.DeepEqual(s["meshfed-echo"], wantSE) {
			return fmt.Errorf("want ServiceEntry meshfed-echo %+v only", wantSE)
		}
		if len(w) != 1 || !reflect.DeepEqual(w["echo/west"], wantWest) {
			return fmt.Errorf("want west's WorkloadEntry %+v only", wantWest)
		}
		return nil
	}
	waitFor("first view", want)
	// Settled: another pass over the same view writes nothing (the built spec and the stored
	// one compare equal: no update every pass).
	writes := func() float64 {
		n := 0.0
		for _, k := range []string{"ServiceEntry", "WorkloadEntry"} {
			for _, verb := range []string{"create", "update"} {
				n += testutil.ToFloat64(im.m.writes.WithLabelValues(k, verb, "ok"))
			}
		}
		return n
	}
	before, passes := writes(), testutil.ToFloat64(im.m.passes.WithLabelValues("ok"))
	im.Update(buildView(1, []*records.Cluster{self, west, north, south}, exports()))
	kubetest.Eventually(t, wait, func() error {
		if testutil.ToFloat64(im.m.passes.WithLabelValues("ok")) <= passes {
			return fmt.Errorf("no pass yet")
		}
		return nil
	})
	if after := writes(); after != before {
		t.Errorf("a pass over an unchanged view wrote %v entries", after-before)
	}
	// The network is the one the Gateway of that cluster is labelled with.
	gw, err := east.c.Dynamic.Resource(GatewayGVR).Namespace("istio-system").Get(ctx, "meshfed-west", metav1.GetOptions{})
	if err != nil || gw.GetLabels()[LabelIstioNetwork] != wantWest.Network {
		t.Errorf("Gateway meshfed-west: %v, labels %v", err, gw.GetLabels())
	}

	// istiod allocates the VIP into status; a hand edit adds an address and changes the
	// network, another deletes the WorkloadEntry: spec repaired, status kept, entry back.
	se, err := ses.Get(ctx, "meshfed-echo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedSlice(se.Object, []any{map[string]any{"host": "echo.ambient.svc.cluster.local", "value": "240.240.0.7"}}, "status", "addresses"); err != nil {
		t.Fatal(err)
	}
	if se, err = ses.UpdateStatus(ctx, se, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	_ = unstructured.SetNestedStringSlice(se.Object, []string{"10.99.0.1"}, "spec", "addresses")
	if _, err := ses.Update(ctx, se, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wl, err := wes.List(ctx, metav1.ListOptions{})
	if err != nil || len(wl.Items) != 1 {
		t.Fatalf("WorkloadEntries: %v %v", err, wl)
	}
	if err := wes.Delete(ctx, wl.Items[0].GetName(), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("after drift", want)
	se, err = ses.Get(ctx, "meshfed-echo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st, _, _ := unstructured.NestedSlice(se.Object, "status", "addresses"); len(st) != 1 {
		t.Errorf("status.addresses %v: istiod's allocation lost", st)
	}

	// A ServiceEntry meshfed did not write is left alone; north gains an HBONE gateway (and
	// so a Gateway and an entry); a second service appears.
	foreign := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
		"metadata": map[string]any{"name": "meshfed-other", "namespace": "ambient"},
		"spec":     map[string]any{"hosts": []any{"other.example"}, "ports": []any{map[string]any{"number": int64(80), "name": "http", "protocol": "HTTP"}}}}}
	if _, err := ses.Create(ctx, foreign, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	north2 := hboneCluster("north", "net-north", "198.51.100.7:15008")
	im.Update(buildView(2, []*records.Cluster{self, west, north2, south}, exports(hboneExport("west", "ambient", "other", 1, 0, tcp))))
	wantNorth := entryShape{Network: "net-north", Locality: "r1/north-a/north", Weight: 3,
		Labels: map[string]string{istio.LabelAmbientService: "echo", istio.LabelCluster: "north"}}
	// The ServiceEntry now names both clusters' identities (sorted).
	wantSEBoth := wantSE
	wantSEBoth.SANs = []string{"spiffe://north.example.org/ns/ambient/sa/echo", "spiffe://west.example.org/ns/ambient/sa/echo"}
	waitFor("north joins", func(s, w map[string]entryShape) error {
		if !reflect.DeepEqual(s["meshfed-echo"], wantSEBoth) || !reflect.DeepEqual(w["echo/west"], wantWest) || !reflect.DeepEqual(w["echo/north"], wantNorth) {
			return fmt.Errorf("want echo from west and north")
		}
		if o := s["meshfed-other"]; !reflect.DeepEqual(o.Hosts, []string{"other.example"}) {
			return fmt.Errorf("foreign ServiceEntry changed: %+v", o)
		}
		return nil
	})

	// A cordon drill on west for echo: west's entry goes, north's stays; the foreign one too.
	v := buildView(3, []*records.Cluster{self, west, north2, south}, exports())
	v.Drills = []*records.Drill{{ID: "d1", Cluster: "west", Namespace: "ambient", Service: "echo"}}
	im.Update(v)
	waitFor("west cordoned", func(s, w map[string]entryShape) error {
		if len(w) != 1 || !reflect.DeepEqual(w["echo/north"], wantNorth) {
			return fmt.Errorf("want north's entry only")
		}
		if sans := s["meshfed-echo"].SANs; !reflect.DeepEqual(sans, []string{"spiffe://north.example.org/ns/ambient/sa/echo"}) {
			return fmt.Errorf("subjectAltNames %q, want north's only", sans)
		}
		return nil
	})

	// Unexported everywhere: nothing of meshfed's is left (the foreign one is).
	im.Update(buildView(4, []*records.Cluster{self, west, north2, south}))
	waitFor("unexported", func(s, w map[string]entryShape) error {
		if len(w) != 0 || len(s) != 1 || s["meshfed-other"].Hosts == nil {
			return fmt.Errorf("want only the foreign ServiceEntry")
		}
		return nil
	})
	kubetest.Eventually(t, wait, func() error {
		for _, k := range []string{"ServiceEntry", "WorkloadEntry"} {
			if n := testutil.ToFloat64(im.m.objects.WithLabelValues(k)); n != 0 {
				return fmt.Errorf("meshfed_kube_importer_objects{kind=%s} = %v, want 0", k, n)
			}
		}
		return nil
	})

	if err := ses.Delete(ctx, "meshfed-other", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// Exported again, then west leaves the clusterset: its Gateway and entries go.
	im.Update(buildView(5, []*records.Cluster{self, west, south}, exports()))
	waitFor("exported again", want)
	im.Update(buildView(6, []*records.Cluster{self, south}, exports()))
	waitFor("west left", func(s, w map[string]entryShape) error {
		if len(w) != 0 || len(s) != 0 {
			return fmt.Errorf("want none")
		}
		return nil
	})
	if _, err := east.c.Dynamic.Resource(GatewayGVR).Namespace("istio-system").Get(ctx, "meshfed-west", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("Gateway meshfed-west after west left: %v", err)
	}
}

// TestIstioAmbientEntriesFakeClients runs the tier's scenario against client-go's fake
// clients: the importer's logic without the kube-apiserver (which also checks the objects
// against Istio's CRD schemas: TestKubernetesTier istio-ambient-entries).
func TestIstioAmbientEntriesFakeClients(t *testing.T) {
	gvrs := map[schema.GroupVersionResource]string{GatewayGVR: "GatewayList"}
	for _, g := range istioEntryGVRs {
		gvrs[g] = map[string]string{"serviceentries": "ServiceEntryList", "workloadentries": "WorkloadEntryList"}[g.Resource]
	}
	c := &Clients{Kube: kubefake.NewClientset(), MCS: fakeMCS(), Dynamic: dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), gvrs)}
	testIstioAmbientEntries(t, &cluster{name: "east", c: c})
}
