package kube

import (
	"net"
	"strings"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/keyspace/records"
)

func TestDesired(t *testing.T) {
	tls := records.Port{Name: "tls", Port: 8443, Protocol: "TCP"}
	grpc := records.Port{Name: "grpc", Port: 9443, Protocol: "TCP", AppProtocol: "grpc"}
	headless := remoteExport("west", "demo", "db", 1, tls)
	headless.Type, headless.SessionAffinity = records.TypeHeadless, records.AffinityClientIP
	v := buildView(7,
		[]*records.Cluster{
			clusterRecord("west", "west-a", "192.0.2.10:15443", "[2001:db8::1]:15443", "gw.west.example.com:15443", "192.0.2.11:16443"),
			clusterRecord("east", "east-a", "192.0.2.30:15443"),
		},
		[]*records.Export{remoteExport("west", "demo", "echo", 1, tls, grpc), headless},
		[]*records.Export{remoteExport("east", "demo", "echo", 3, tls)},
	)
	got := desired(v, "east")
	if len(got.imports) != 2 {
		t.Fatalf("imports %v", keys(got.imports))
	}
	echo := got.imports["demo/echo"]
	if echo.si.Spec.Type != mcsv1a1.ClusterSetIP || len(echo.si.Spec.Ports) != 2 || len(echo.si.Status.Clusters) != 2 {
		t.Errorf("echo import %+v %+v", echo.si.Spec, echo.si.Status)
	}
	// west: IPv4 on 15443, IPv4 on 16443, IPv6, FQDN; east is us: no slice.
	types := map[string]int{}
	for _, sl := range echo.slices {
		if sl.Labels[mcsv1a1.LabelSourceCluster] != "west" {
			t.Errorf("slice for %s: this cluster's own endpoints are not imported", sl.Labels[mcsv1a1.LabelSourceCluster])
		}
		types[string(sl.AddressType)] += len(sl.Endpoints)
		if len(sl.Ports) != 2 {
			t.Errorf("slice %s ports %s", sl.Name, js(sl.Ports))
		}
	}
	if len(echo.slices) != 4 || types["IPv4"] != 2 || types["IPv6"] != 1 || types["FQDN"] != 1 {
		t.Errorf("slices %d by type %v", len(echo.slices), types)
	}
	db := got.imports["demo/db"]
	if db.si.Spec.Type != mcsv1a1.Headless || db.si.Spec.SessionAffinity != "ClientIP" {
		t.Errorf("db import %+v", db.si.Spec)
	}
	// Same view, same names: passes are idempotent.
	again := desired(v, "east")
	for i, sl := range echo.slices {
		if again.imports["demo/echo"].slices[i].Name != sl.Name {
			t.Fatal("slice names are not stable")
		}
	}
	// From west's side: east's export of echo (3 ready) is imported, db is west's own.
	w := desired(v, "west")
	if len(w.imports) != 1 || len(w.imports["demo/echo"].slices) != 1 {
		t.Errorf("west imports %v", keys(w.imports))
	}
	if ep := w.imports["demo/echo"].slices[0]; len(ep.Ports) != 1 || !*ep.Endpoints[0].Conditions.Ready {
		t.Errorf("east's slice as seen by west: %s %s", js(ep.Ports), js(ep.Endpoints))
	}
	if desired(nil, "east").imports == nil {
		t.Error("nil view must give an empty state")
	}
}

func TestSliceNamesDistinct(t *testing.T) {
	g := &gatewayGroup{addrType: discoveryv1.AddressTypeIPv4, port: 15443}
	a := sliceName("demo", "a-b", "c", g)
	b := sliceName("demo", "a", "b-c", g)
	if a == b {
		t.Errorf("%s and %s collide", a, b)
	}
	long := sliceName("demo", strings.Repeat("s", 63), strings.Repeat("c", 63), g)
	if errs := validation.IsDNS1123Subdomain(long); len(errs) > 0 {
		t.Errorf("%s: %v", long, errs)
	}
}

// FuzzDesiredGateways feeds arbitrary gateway strings and names through the importer's
// object builder: no panic, and every slice it builds is valid for the API server.
func FuzzDesiredGateways(f *testing.F) {
	f.Add("192.0.2.1:15443", "[2001:db8::1]:443", "gw.example.com:15443", "west", "echo", uint8(2))
	f.Add("[::ffff:192.0.2.1]:1", "host:0", "::1", "a", "b", uint8(0))
	f.Add("x:99999", ":80", "[fe80::1%eth0]:80", strings.Repeat("c", 63), strings.Repeat("s", 63), uint8(9))
	f.Fuzz(func(t *testing.T, g1, g2, g3, cluster, svc string, ready uint8) {
		if validation.IsDNS1123Label(cluster) != nil || validation.IsDNS1123Label(svc) != nil || cluster == "east" {
			return
		}
		e := remoteExport(cluster, "demo", svc, int(ready%4), records.Port{Name: "tls", Port: 8443, Protocol: "TCP"})
		rec := &records.Cluster{Name: cluster, Zone: "z", Gateways: []string{g1, g2, g3}, JoinedAt: time.Unix(1, 0)}
		// Only what a record that passed validation can hold reaches the importer.
		var gws []string
		for _, g := range rec.Gateways {
			if validate.HostPort(g) == nil {
				gws = append(gws, g)
			}
		}
		rec.Gateways = gws
		v := buildView(1, []*records.Cluster{rec}, []*records.Export{e})
		st := desired(v, "east")
		w := st.imports["demo/"+svc]
		if w == nil {
			t.Fatal("a remote export must give a ServiceImport")
		}
		for _, sl := range w.slices {
			if errs := validation.IsDNS1123Subdomain(sl.Name); len(errs) > 0 {
				t.Fatalf("slice name %q: %v", sl.Name, errs)
			}
			for k, val := range sl.Labels {
				if errs := validation.IsValidLabelValue(val); len(errs) > 0 {
					t.Fatalf("label %s=%q: %v", k, val, errs)
				}
			}
			for _, ep := range sl.Endpoints {
				a := ep.Addresses[0]
				switch sl.AddressType {
				case discoveryv1.AddressTypeIPv4:
					if ip := net.ParseIP(a); ip == nil || ip.To4() == nil {
						t.Fatalf("IPv4 slice with %q", a)
					}
				case discoveryv1.AddressTypeIPv6:
					if ip := net.ParseIP(a); ip == nil || ip.To4() != nil {
						t.Fatalf("IPv6 slice with %q", a)
					}
				case discoveryv1.AddressTypeFQDN:
					if errs := validation.IsDNS1123Subdomain(a); len(errs) > 0 {
						t.Fatalf("FQDN slice with %q: %v", a, errs)
					}
				}
				if *ep.Conditions.Ready != (ready%4 > 0) {
					t.Fatalf("ready = %v with %d ready endpoints", *ep.Conditions.Ready, ready%4)
				}
			}
		}
	})
}
