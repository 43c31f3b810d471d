package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/meshfed/meshfed/internal/kubetest"
	"github.com/meshfed/meshfed/keyspace/records"
)

func hboneCluster(name, network string, hbone ...string) *records.Cluster {
	c := clusterRecord(name, name+"-a", "192.0.2.99:15443")
	c.Network, c.HBONEGateways = network, hbone
	return c
}

// gatewayShape is what istiod reads from an istio-remote Gateway (istiogateways.go says
// where), as plain values.
type gatewayShape struct {
	Name, Namespace, Class, Network, Cluster, ServiceAccount string
	Addresses, StatusAddresses                               []string
	Listeners                                                []string
}

func shapeOf(u *unstructured.Unstructured, status []any) gatewayShape {
	s := gatewayShape{Name: u.GetName(), Namespace: u.GetNamespace(), Network: u.GetLabels()[LabelIstioNetwork],
		Cluster: u.GetLabels()["multicluster.kubernetes.io/source-cluster"], ServiceAccount: u.GetAnnotations()[AnnotationGatewayServiceAccount]}
	s.Class, _, _ = unstructured.NestedString(u.Object, "spec", "gatewayClassName")
	addrs := func(l []any) []string {
		var out []string
		for _, a := range l {
			m, _ := a.(map[string]any)
			out = append(out, fmt.Sprintf("%v=%v", m["type"], m["value"]))
		}
		return out
	}
	sa, _, _ := unstructured.NestedSlice(u.Object, "spec", "addresses")
	s.Addresses = addrs(sa)
	if status == nil {
		status, _, _ = unstructured.NestedSlice(u.Object, "status", "addresses")
	}
	s.StatusAddresses = addrs(status)
	ls, _, _ := unstructured.NestedSlice(u.Object, "spec", "listeners")
	for _, l := range ls {
		m, _ := l.(map[string]any)
		tls, _ := m["tls"].(map[string]any)
		s.Listeners = append(s.Listeners, fmt.Sprintf("%v:%v/%v tls=%v", m["name"], m["port"], m["protocol"], tls["mode"]))
	}
	return s
}

func TestDesiredGateways(t *testing.T) {
	v := buildView(3, []*records.Cluster{
		hboneCluster("east", "net-east"),
		hboneCluster("west", "net-west", "192.0.2.10:15008", "[2001:db8::10]:15008", "GW.West.example:15008", "[::ffff:192.0.2.10]:15008"),
		hboneCluster("north", "net-north"),                      // no HBONE listener: no Gateway
		hboneCluster("south", "net-east", "198.51.100.1:15008"), // east's own network: none
		hboneCluster("far", "net-far", "[fe80::1%eth0]:15008"),  // nothing usable: none
		hboneCluster("alt", "net-alt", "203.0.113.5:16008"),     // another port is kept as it is
	})
	p := desiredGateways(v, "east", IstioRemoteGateways{Namespace: "istio-system", ServiceAccount: "meshfed-gateway"})
	if !reflect.DeepEqual(p.sameNetwork, []string{"south"}) {
		t.Errorf("same network: %v", p.sameNetwork)
	}
	if len(p.want) != 2 || p.want["meshfed-west"] == nil || p.want["meshfed-alt"] == nil {
		t.Fatalf("gateways %v", keys(p.want))
	}
	got := shapeOf(p.want["meshfed-west"].obj, p.want["meshfed-west"].addresses)
	want := gatewayShape{Name: "meshfed-west", Namespace: "istio-system", Class: "istio-remote", Network: "net-west", Cluster: "west",
		ServiceAccount: "meshfed-gateway",
		// The IPv4-mapped form is the same address: listed once.
		Addresses:       []string{"IPAddress=192.0.2.10", "IPAddress=2001:db8::10", "Hostname=gw.west.example"},
		StatusAddresses: []string{"IPAddress=192.0.2.10", "IPAddress=2001:db8::10", "Hostname=gw.west.example"},
		Listeners:       []string{"cross-network:15008/HBONE tls=Passthrough"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("west Gateway\n got %+v\nwant %+v", got, want)
	}
	if l := shapeOf(p.want["meshfed-alt"].obj, nil).Listeners; !reflect.DeepEqual(l, []string{"cross-network:16008/HBONE tls=Passthrough"}) {
		t.Errorf("alt listeners %v", l)
	}
	// No service account configured: no annotation (istiod then uses <name>-istio-remote).
	p = desiredGateways(v, "east", IstioRemoteGateways{Namespace: "istio-system"})
	if a := p.want["meshfed-west"].obj.GetAnnotations(); a != nil {
		t.Errorf("annotations %v", a)
	}
	// Pure: the same view gives the same objects.
	a, _ := json.Marshal(desiredGateways(v, "east", IstioRemoteGateways{Namespace: "x"}).want["meshfed-west"].obj)
	b, _ := json.Marshal(desiredGateways(v, "east", IstioRemoteGateways{Namespace: "x"}).want["meshfed-west"].obj)
	if string(a) != string(b) {
		t.Error("not deterministic")
	}
}

func TestContains(t *testing.T) {
	have := map[string]any{"a": []any{map[string]any{"port": int64(15008), "extra": true}}, "defaulted": "x"}
	for _, tt := range []struct {
		want any
		ok   bool
	}{
		{map[string]any{"a": []any{map[string]any{"port": int64(15008)}}}, true},
		{map[string]any{"a": []any{map[string]any{"port": int64(15009)}}}, false},
		{map[string]any{"a": []any{}}, false},
		{map[string]any{"missing": "y"}, false},
	} {
		if got := contains(have, tt.want); got != tt.ok {
			t.Errorf("contains(%v) = %v", tt.want, got)
		}
	}
	if !contains(float64(3), int64(3)) {
		t.Error("JSON numbers")
	}
}

// testIstioRemoteGateways runs the importer with Istio remote Gateways against a real
// kube-apiserver with the Gateway API CRD (its schema and CEL rules): the Gateway of a
// remote cluster appears when its record has HBONE gateways, follows changes, is repaired
// when edited, and disappears with the cluster.
func testIstioRemoteGateways(t *testing.T, east *cluster) {
	ctx := context.Background()
	if err := east.api.InstallGatewayCRD(ctx); err != nil {
		t.Fatal(err)
	}
	east.ns(t, "istio-system")
	im := startImporter(t, east, func(c *ImporterConfig) {
		c.Dynamic = east.c.Dynamic
		c.IstioRemoteGateways = &IstioRemoteGateways{Namespace: "istio-system", ServiceAccount: "meshfed-gateway"}
	})
	gws := east.c.Dynamic.Resource(GatewayGVR).Namespace("istio-system")
	get := func(name string) (gatewayShape, error) {
		u, err := gws.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return gatewayShape{}, err
		}
		return shapeOf(u, nil), nil
	}
	waitShape := func(name string, want gatewayShape) {
		t.Helper()
		kubetest.Eventually(t, wait, func() error {
			got, err := get(name)
			if err != nil {
				return err
			}
			if !reflect.DeepEqual(got, want) {
				return fmt.Errorf("Gateway %s\n got %+v\nwant %+v", name, got, want)
			}
			return nil
		})
	}
	self := hboneCluster("east", "net-east", "192.0.2.30:15008")
	west := hboneCluster("west", "net-west", "192.0.2.10:15008", "[2001:db8::10]:15008")
	north := hboneCluster("north", "net-north")
	im.Update(buildView(1, []*records.Cluster{self, west, north}))
	want := gatewayShape{Name: "meshfed-west", Namespace: "istio-system", Class: "istio-remote", Network: "net-west", Cluster: "west",
		ServiceAccount:  "meshfed-gateway",
		Addresses:       []string{"IPAddress=192.0.2.10", "IPAddress=2001:db8::10"},
		StatusAddresses: []string{"IPAddress=192.0.2.10", "IPAddress=2001:db8::10"},
		Listeners:       []string{"cross-network:15008/HBONE tls=Passthrough"}}
	waitShape("meshfed-west", want)
	if _, err := get("meshfed-north"); !apierrors.IsNotFound(err) {
		t.Errorf("north (no HBONE listener) has a Gateway: %v", err)
	}

	// west re-joins with another address set; north gains an HBONE listener.
	west2 := hboneCluster("west", "net-west", "gw.west.example:15008")
	north2 := hboneCluster("north", "net-north", "198.51.100.7:15008")
	im.Update(buildView(2, []*records.Cluster{self, west2, north2}))
	want.Addresses, want.StatusAddresses = []string{"Hostname=gw.west.example"}, []string{"Hostname=gw.west.example"}
	waitShape("meshfed-west", want)
	waitShape("meshfed-north", gatewayShape{Name: "meshfed-north", Namespace: "istio-system", Class: "istio-remote", Network: "net-north", Cluster: "north",
		ServiceAccount: "meshfed-gateway", Addresses: []string{"IPAddress=198.51.100.7"}, StatusAddresses: []string{"IPAddress=198.51.100.7"},
		Listeners: []string{"cross-network:15008/HBONE tls=Passthrough"}})

	// Someone clears the status (or istiod's status writer had not run): written again.
	u, err := gws.Get(ctx, "meshfed-west", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unstructured.RemoveNestedField(u.Object, "status", "addresses")
	if _, err := gws.UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	im.Update(buildView(3, []*records.Cluster{self, west2, north2}))
	waitShape("meshfed-west", want)

	// west leaves: its Gateway goes; north's stays.
	im.Update(buildView(4, []*records.Cluster{self, north2}))
	kubetest.Eventually(t, wait, func() error {
		if _, err := get("meshfed-west"); !apierrors.IsNotFound(err) {
			return fmt.Errorf("meshfed-west still there: %v", err)
		}
		return nil
	})
	if _, err := get("meshfed-north"); err != nil {
		t.Errorf("north's Gateway: %v", err)
	}
	kubetest.Eventually(t, wait, func() error {
		if n := testutil.ToFloat64(im.m.objects.WithLabelValues("Gateway")); n != 1 {
			return fmt.Errorf("meshfed_kube_importer_objects{kind=Gateway} = %v, want 1", n)
		}
		return nil
	})
}

func TestImporterGatewayConfig(t *testing.T) {
	kc := kubefake.NewClientset()
	for _, tt := range []struct {
		g    *IstioRemoteGateways
		dyn  bool
		want string
	}{
		{&IstioRemoteGateways{}, false, "dynamic client"},
		{&IstioRemoteGateways{Namespace: "Istio_System"}, true, "namespace: "},
		{&IstioRemoteGateways{ServiceAccount: "a b"}, true, "serviceAccount: "},
	} {
		cfg := ImporterConfig{Cluster: "east", Kube: kc, MCS: fakeMCS(), IstioRemoteGateways: tt.g}
		if tt.dyn {
			cfg.Dynamic = dynamicfake.NewSimpleDynamicClient(runtime.NewScheme())
		}
		if _, err := NewImporter(cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want %q", tt.g, err, tt.want)
		}
	}
}
