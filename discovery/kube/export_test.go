package kube

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/view"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func svcExport(ns, name string, created time.Time) *mcsv1a1.ServiceExport {
	return &mcsv1a1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(created), Generation: 1}}
}

func service(ns, name string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.10", Ports: ports},
	}
}

func tcpPort(name string, port int32, target intstr.IntOrString) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, Protocol: corev1.ProtocolTCP, TargetPort: target}
}

type ep struct {
	addr  string
	ready *bool
	zone  string
}

func slice(ns, svc, name string, at discoveryv1.AddressType, ports map[string]int32, eps ...ep) *discoveryv1.EndpointSlice {
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: at,
	}
	for n, p := range ports {
		sl.Ports = append(sl.Ports, discoveryv1.EndpointPort{Name: ptr(n), Port: ptr(p), Protocol: ptr(corev1.ProtocolTCP)})
	}
	for _, e := range eps {
		x := discoveryv1.Endpoint{Addresses: []string{e.addr}, Conditions: discoveryv1.EndpointConditions{Ready: e.ready}}
		if e.zone != "" {
			x.Zone = ptr(e.zone)
		}
		sl.Endpoints = append(sl.Endpoints, x)
	}
	return sl
}

func TestBuildExport(t *testing.T) {
	se := svcExport("demo", "echo", t0)
	svc := service("demo", "echo",
		tcpPort("tls", 8443, intstr.FromString("https")),
		tcpPort("grpc", 9443, intstr.FromInt32(9000)),
		corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP})
	svc.Spec.Ports[1].AppProtocol = ptr("grpc")
	svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	slices := []*discoveryv1.EndpointSlice{
		slice("demo", "echo", "echo-b", discoveryv1.AddressTypeIPv4, map[string]int32{"tls": 443, "grpc": 9000},
			ep{addr: "10.0.0.2", ready: ptr(false), zone: "z1"},
			ep{addr: "10.0.0.3", zone: "z2"}, // nil ready means ready
		),
		slice("demo", "echo", "echo-a", discoveryv1.AddressTypeIPv4, map[string]int32{"tls": 443, "grpc": 9000},
			ep{addr: "10.0.0.1", ready: ptr(true), zone: "z1"},
			ep{addr: "10.0.0.2", ready: ptr(true)}, // also in echo-b, not ready there
		),
		slice("demo", "echo", "echo-fqdn", discoveryv1.AddressTypeFQDN, nil, ep{addr: "backend.example.com"}),
	}
	exp, inv, notes := buildExport("west", se, svc, slices, podPolicy{})
	if inv != nil {
		t.Fatalf("invalid: %+v", inv)
	}
	want := &records.Export{
		Cluster: "west", Namespace: "demo", Name: "echo",
		Type: records.TypeClusterSetIP, SessionAffinity: records.AffinityClientIP,
		Ports: []records.Port{
			{Name: "tls", Port: 8443, TargetPort: 443, Protocol: "TCP"},
			{Name: "grpc", Port: 9443, TargetPort: 9000, Protocol: "TCP", AppProtocol: "grpc"},
		},
		Endpoints: []records.Endpoint{
			{Address: "10.0.0.1", Zone: "z1", Ready: true},
			{Address: "10.0.0.2", Zone: "z1", Ready: true},
			{Address: "10.0.0.3", Zone: "z2", Ready: true},
		},
		ExportedAt: t0,
	}
	if g, w := js(exp), js(want); g != w {
		t.Errorf("export\n got %s\nwant %s", g, w)
	}
	if len(notes) != 2 || !strings.Contains(notes[0], "53/UDP") || !strings.Contains(notes[1], "FQDN") {
		t.Errorf("notes = %q, want the UDP port and the FQDN endpoint reported", notes)
	}

	// Headless, and a named target port with no slices yet falls back to the port.
	svc = service("demo", "echo", tcpPort("", 8443, intstr.FromString("https")))
	svc.Spec.ClusterIP = corev1.ClusterIPNone
	exp, inv, _ = buildExport("west", se, svc, nil, podPolicy{})
	if inv != nil || exp.Type != records.TypeHeadless || exp.Ports[0].TargetPort != 0 || exp.SessionAffinity != records.AffinityNone {
		t.Errorf("headless: %+v %+v", exp, inv)
	}
	if exp.Endpoints == nil {
		t.Error("no endpoints must be an empty list, not null")
	}
}

func TestBuildExportInvalid(t *testing.T) {
	se := svcExport("demo", "echo", t0)
	ext := service("demo", "echo")
	ext.Spec.Type, ext.Spec.ExternalName = corev1.ServiceTypeExternalName, "example.com"
	udp := service("demo", "echo", corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP})
	noPorts := service("demo", "echo")
	badName := service("demo", "echo", tcpPort("", 8443, intstr.FromInt32(8443)), tcpPort("", 9443, intstr.FromInt32(9443)))
	for _, tc := range []struct {
		name   string
		svc    *corev1.Service
		reason mcsv1a1.ServiceExportConditionReason
		msg    string
	}{
		{"missing", nil, mcsv1a1.ServiceExportReasonNoService, "not found"},
		{"externalname", ext, mcsv1a1.ServiceExportReasonInvalidServiceType, "ExternalName"},
		{"udp only", udp, ReasonNoExportablePorts, "no TCP port"},
		{"no ports", noPorts, ReasonNoExportablePorts, "no ports"},
		{"unnamed ports", badName, ReasonInvalidService, "name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			exp, inv, _ := buildExport("west", se, tc.svc, nil, podPolicy{})
			if exp != nil || inv == nil {
				t.Fatalf("got export %+v, want invalid", exp)
			}
			if inv.Reason != tc.reason || !strings.Contains(inv.Message, tc.msg) {
				t.Errorf("invalid = %+v, want reason %s and %q in the message", inv, tc.reason, tc.msg)
			}
		})
	}
}

func TestConditions(t *testing.T) {
	get := func(cs []metav1.Condition, ty mcsv1a1.ServiceExportConditionType) string {
		c := findCondition(cs, ty)
		if c == nil {
			return "-"
		}
		return string(c.Status) + "/" + c.Reason
	}
	// Someone else's condition is kept.
	cur := []metav1.Condition{{Type: "Other", Status: metav1.ConditionTrue, Reason: "Mine", LastTransitionTime: metav1.NewTime(t0)}}

	pending, changed := conditions(cur, 1, nil, nil, statusInput{})
	if !changed || get(pending, "Valid") != "True/Valid" || get(pending, "Ready") != "False/Pending" || get(pending, "Conflict") != "-" || get(pending, "Other") != "True/Mine" {
		t.Fatalf("pending: %+v", pending)
	}
	if _, again := conditions(pending, 1, nil, nil, statusInput{}); again {
		t.Error("same input must not change the conditions (no status write)")
	}
	exported, _ := conditions(pending, 1, nil, nil, statusInput{known: true, exporters: 2})
	if get(exported, "Ready") != "True/Exported" || get(exported, "Conflict") != "False/NoConflicts" {
		t.Fatalf("exported: %+v", exported)
	}
	validSince := findCondition(exported, "Valid").LastTransitionTime
	conflict, _ := conditions(exported, 1, nil, nil, statusInput{known: true, exporters: 2, conflicts: []view.Conflict{
		{Cluster: "west", Field: "type", Message: "type differs"},
		{Cluster: "west", Field: "ports[80]", Message: "port 80 differs"},
		{Cluster: "west", Field: "ports[81]", Message: "port 81 differs"},
	}})
	c := findCondition(conflict, "Conflict")
	if c.Status != metav1.ConditionTrue || c.Reason != "TypeConflict,PortConflict" || !strings.Contains(c.Message, "port 81 differs") {
		t.Fatalf("conflict: %+v", c)
	}
	if !findCondition(conflict, "Valid").LastTransitionTime.Equal(&validSince) {
		t.Error("Valid did not flip, its lastTransitionTime must stay")
	}
	bad, _ := conditions(conflict, 2, &invalid{mcsv1a1.ServiceExportReasonNoService, "gone"}, nil, statusInput{})
	if get(bad, "Valid") != "False/NoService" || get(bad, "Ready") != "False/Failed" || get(bad, "Conflict") != "-" {
		t.Fatalf("invalid: %+v", bad)
	}
	if findCondition(bad, "Valid").ObservedGeneration != 2 {
		t.Error("observedGeneration not set")
	}
}

func TestStatusFromView(t *testing.T) {
	a := &view.ClusterExport{Cluster: "east", Export: &records.Export{Cluster: "east", Namespace: "demo", Name: "echo", Type: records.TypeClusterSetIP, ExportedAt: t0,
		Ports: []records.Port{{Name: "tls", Port: 8443, Protocol: "TCP"}}}}
	b := &view.ClusterExport{Cluster: "west", Export: &records.Export{Cluster: "west", Namespace: "demo", Name: "echo", Type: records.TypeHeadless, ExportedAt: t0.Add(time.Hour),
		Ports: []records.Port{{Name: "tls", Port: 8443, Protocol: "TCP"}}}}
	v := &view.View{Services: map[string]*view.Service{"demo/echo": view.Merge([]*view.ClusterExport{a, b})}}
	if st := statusFromView(v, "east", "demo/echo"); !st.known || len(st.conflicts) != 0 || st.exporters != 2 {
		t.Errorf("oldest export: %+v", st)
	}
	if st := statusFromView(v, "west", "demo/echo"); !st.known || len(st.conflicts) != 1 || st.conflicts[0].Field != "type" {
		t.Errorf("newer export: %+v", st)
	}
	if st := statusFromView(v, "north", "demo/echo"); st.known {
		t.Errorf("a cluster that does not export it: %+v", st)
	}
	if st := statusFromView(nil, "east", "demo/echo"); st.known {
		t.Error("no view yet must say unknown")
	}
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// FuzzBuildExport feeds arbitrary Services and EndpointSlices (as a Kubernetes API server
// could hand them over, JSON-decoded) to buildExport: it must never panic, and whatever it
// accepts must be a record the publisher accepts.
func FuzzBuildExport(f *testing.F) {
	f.Add([]byte(`{"metadata":{"namespace":"demo","name":"echo"},"spec":{"clusterIP":"None","ports":[{"name":"tls","port":8443,"targetPort":"https"}]}}`),
		[]byte(`[{"metadata":{"name":"a"},"addressType":"IPv4","ports":[{"name":"tls","port":443}],"endpoints":[{"addresses":["10.0.0.1"],"zone":"z1"},{"addresses":["10.0.0.1"],"conditions":{"ready":false}}]}]`))
	f.Add([]byte(`{"metadata":{"namespace":"demo","name":"echo"},"spec":{"type":"ExternalName"}}`), []byte(`[]`))
	f.Add([]byte(`{"metadata":{"namespace":"demo","name":"echo"},"spec":{"ports":[{"port":0},{"port":70000,"protocol":"SCTP"}]}}`),
		[]byte(`[{"addressType":"IPv6","endpoints":[{"addresses":["::1","x"]},{"addresses":[]},{"addresses":["not-an-ip"],"zone":"Bad Zone"}]}]`))
	f.Add([]byte(`null`), []byte(`null`))
	f.Fuzz(func(t *testing.T, svcJSON, slicesJSON []byte) {
		var svc *corev1.Service
		if err := json.Unmarshal(svcJSON, &svc); err != nil {
			return
		}
		var slices []*discoveryv1.EndpointSlice
		if err := json.Unmarshal(slicesJSON, &slices); err != nil {
			return
		}
		clean := slices[:0]
		for _, s := range slices {
			if s != nil {
				clean = append(clean, s)
			}
		}
		se := svcExport("demo", "echo", t0)
		exp, inv, _ := buildExport("west", se, svc, clean, podPolicy{})
		if (exp == nil) == (inv == nil) {
			t.Fatalf("want exactly one of export and invalid: %+v %+v", exp, inv)
		}
		if exp != nil {
			exp.Revision = 1
			if err := exp.Validate(); err != nil {
				t.Fatalf("accepted an export the publisher refuses: %v", err)
			}
			if _, err := records.Encode(exp); err != nil {
				t.Fatalf("encode: %v", err)
			}
		} else if inv.Reason == "" || inv.Message == "" {
			t.Fatalf("invalid without reason or message: %+v", inv)
		}
	})
}
