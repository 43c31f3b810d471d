package istio

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/federation/planner"
	"github.com/meshfed/meshfed/internal/istiotest"
	"github.com/meshfed/meshfed/internal/kubetest"
	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/keyspace/records"
)

// echoPlan is the plan of demo/echo seen from east: west (same region) first, then north,
// each with its gateway addresses; weights are their ready endpoints.
func echoPlan(levels ...planner.Level) *Service {
	return &Service{
		Plan:  planner.ServicePlan{Namespace: "demo", Name: "echo", Ports: []planner.PortPlan{{Port: 8443, Levels: levels}}},
		Ports: []records.Port{{Name: "https", Port: 8443, Protocol: "TCP"}},
	}
}

func gw(cluster, region, zone string, weight uint32, addrs ...string) planner.Level {
	l := planner.Level{Cluster: cluster, Region: region, Zone: zone, Weight: weight}
	for _, a := range addrs {
		l.Endpoints = append(l.Endpoints, planner.Endpoint{Host: a, Port: 15443, Weight: weight})
	}
	return l
}

const echoCluster = "outbound|8443||echo.demo.svc.cluster.local"

// TestIstiodTakesThePlan runs a real istiod fed by this package's server and reads what it
// sends a sidecar of east: the resource form (ServiceEntry, WorkloadEntry per gateway
// address, DestinationRule with failoverPriority) must give the SNI meshfed's gateways
// route and EDS in meshfed's order — whatever the node's locality says — with one endpoint
// per gateway address and weights = ready endpoints; a new order, a removed cluster and a
// removed service must follow. The ServiceEntry's subjectAltNames (the remote workloads'
// SPIFFE IDs, Identities) become the sidecar cluster's exact SAN matchers; with a remote
// cluster's accounts unknown there are none (roots only).
func TestIstiodTakesThePlan(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kube-apiserver and istiod")
	}
	if istiotest.Binary() == "" {
		t.Skip(istiotest.SkipHint)
	}
	api := kubetest.Start(t)
	srv, _ := startServer(t, Options{})
	src := NewSource(srv, BuildOptions{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = src.Run(ctx) }()

	// The plan's order deliberately disagrees with locality: north (another region) first.
	// The remote workloads run as demo/echo in west's trust domain and demo/echo-north in
	// north's.
	sans := []string{"spiffe://north.example/ns/demo/sa/echo-north", "spiffe://west.example/ns/demo/sa/echo"}
	first := echoPlan(
		gw("north", "r2", "r2-a", 3, "127.0.0.31"),
		gw("west", "r1", "r1-b", 2, "127.0.0.21", "127.0.0.22"),
	)
	first.Identities = Identities{SANs: sans}
	src.Update(map[string]*Service{"demo/echo": first})
	waitState(t, srv)

	mesh := fmt.Sprintf("configSources:\n- address: xds://%s\n- address: k8s://\ntrustDomain: east.example\n", srv.Addr())
	ist := istiotest.Start(t, istiotest.Config{APIServer: api, ClusterID: "east", MeshConfig: []byte(mesh)})

	sc := eastClient(t, ist.XDSAddr, 0)

	want := echoEDSIs
	north := istiotest.Endpoint{Priority: 0, Locality: "r2/r2-a/north", Address: "127.0.0.31:15443", Weight: 3}
	west1 := istiotest.Endpoint{Priority: 1, Locality: "r1/r1-b/west", Address: "127.0.0.21:15443", Weight: 2}
	west2 := istiotest.Endpoint{Priority: 1, Locality: "r1/r1-b/west", Address: "127.0.0.22:15443", Weight: 2}
	snap, took, err := sc.WaitFor(60*time.Second, want(north, west1, west2))
	if err != nil {
		t.Fatalf("EDS: %v\ngot %v\nistiod: %s", err, istiotest.Flatten(snap.Endpoints[echoCluster]), ist.LogTail(30))
	}
	t.Logf("first EDS after %v: %v", took, istiotest.Flatten(snap.Endpoints[echoCluster]))

	// CDS: EDS cluster with Istio mTLS and the SNI meshfed's gateways route.
	c := snap.Clusters[echoCluster]
	if c == nil {
		t.Fatalf("no CDS %s; have %v", echoCluster, keys(snap.Clusters))
	}
	sni, validation := clusterTLS(t, c)
	if want := "outbound_.8443_._.echo.demo.svc.cluster.local"; sni != want {
		t.Errorf("SNI %q, want %q", sni, want)
	}
	t.Logf("CDS %s: SNI %s, validation %s, exact SANs %q", c.GetName(), sni, validation, sanMatchers(t, c))
	// The SANs the sidecar checks the remote workload against: exactly the ServiceEntry's
	// (the mesh config has no trustDomainAliases to expand them, the WorkloadEntries name no
	// service account).
	if got := sanMatchers(t, c); !slices.Equal(got, sans) {
		t.Errorf("sidecar's SAN matchers %q, want exactly %q", got, sans)
	}

	// The plan changes order: west first now (e.g. a policy override); and north's accounts
	// are no longer known (its exports lost serviceAccount): no SANs at all, roots only.
	reordered := echoPlan(
		gw("west", "r1", "r1-b", 2, "127.0.0.21", "127.0.0.22"),
		gw("north", "r2", "r2-a", 3, "127.0.0.31"),
	)
	reordered.Identities = Identities{SANs: sans[1:], Unknown: []string{"north"}}
	src.Update(map[string]*Service{"demo/echo": reordered})
	west1.Priority, west2.Priority, north.Priority = 0, 0, 1
	if snap, took, err = sc.WaitFor(30*time.Second, want(west1, west2, north)); err != nil {
		t.Fatalf("reorder: %v; got %v", err, istiotest.Flatten(snap.Endpoints[echoCluster]))
	}
	t.Logf("reorder reached the sidecar in %v", took)
	if snap, took, err = sc.WaitFor(30*time.Second, func(s istiotest.Snapshot) bool {
		c := s.Clusters[echoCluster]
		return c != nil && len(sanMatchers(t, c)) == 0
	}); err != nil {
		t.Fatalf("SANs with north's accounts unknown: %v; got %q", err, sanMatchers(t, snap.Clusters[echoCluster]))
	}
	t.Logf("SAN matchers gone (roots only) %v after the identities changed", took)

	// West leaves the plan (gateway down, drill, no ready endpoints: the plan says so).
	src.Update(map[string]*Service{"demo/echo": echoPlan(gw("north", "r2", "r2-a", 3, "127.0.0.31"))})
	north.Priority = 0
	if snap, took, err = sc.WaitFor(30*time.Second, want(north)); err != nil {
		t.Fatalf("west removed: %v; got %v", err, istiotest.Flatten(snap.Endpoints[echoCluster]))
	}
	t.Logf("removal reached the sidecar in %v", took)

	// The service is no longer imported: the cluster goes.
	src.Update(map[string]*Service{"demo/echo": nil})
	if _, _, err = sc.WaitFor(30*time.Second, func(s istiotest.Snapshot) bool { return s.Clusters[echoCluster] == nil }); err != nil {
		t.Fatalf("unimport: %v", err)
	}
}

func waitState(t *testing.T, s *Server) {
	t.Helper()
	waitfor.Cond(t, 10*time.Second, func() bool { return s.Ready() == nil }, "no state")
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		if strings.Contains(k, "echo") {
			out = append(out, k)
		}
	}
	return out
}

// clusterTLS returns the SNI of the cluster's Istio mTLS transport socket match and a
// description of how it validates the peer.
func clusterTLS(t *testing.T, c *clusterv3.Cluster) (sni, validation string) {
	t.Helper()
	for _, m := range c.GetTransportSocketMatches() {
		ts := m.GetTransportSocket()
		if ts.GetName() != "envoy.transport_sockets.tls" {
			continue
		}
		u := &tlsv3.UpstreamTlsContext{}
		if err := ts.GetTypedConfig().UnmarshalTo(u); err != nil {
			t.Fatal(err)
		}
		cv := u.GetCommonTlsContext().GetCombinedValidationContext()
		return u.GetSni(), fmt.Sprintf("SANs %v, roots SDS %q", cv.GetDefaultValidationContext().GetMatchTypedSubjectAltNames(),
			cv.GetValidationContextSdsSecretConfig().GetName())
	}
	if ts := c.GetTransportSocket(); ts != nil {
		u := &tlsv3.UpstreamTlsContext{}
		if err := ts.GetTypedConfig().UnmarshalTo(u); err == nil {
			return u.GetSni(), "transport socket"
		}
	}
	t.Fatalf("cluster %s has no TLS transport socket: %v", c.GetName(), c)
	return "", ""
}

// sanMatchers returns the exact SAN matchers of the cluster's Istio mTLS validation
// context (istiod sets the deprecated match_subject_alt_names from the service's accounts;
// typed ones counted too), sorted.
func sanMatchers(t *testing.T, c *clusterv3.Cluster) []string {
	t.Helper()
	var out []string
	add := func(u *tlsv3.UpstreamTlsContext) {
		dv := u.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext()
		for _, m := range dv.GetMatchSubjectAltNames() { //nolint:staticcheck // what istiod sets
			out = append(out, m.GetExact())
		}
		for _, m := range dv.GetMatchTypedSubjectAltNames() {
			out = append(out, m.GetMatcher().GetExact())
		}
	}
	for _, m := range c.GetTransportSocketMatches() {
		if ts := m.GetTransportSocket(); ts.GetName() == "envoy.transport_sockets.tls" {
			u := &tlsv3.UpstreamTlsContext{}
			if err := ts.GetTypedConfig().UnmarshalTo(u); err != nil {
				t.Fatal(err)
			}
			add(u)
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// TestIstiodLocalServiceFirst: east also runs demo/echo itself, as a Kubernetes Service
// (two ready pods, an EndpointSlice, the port named as in the export) beside the import.
// What istiod sends east's sidecar for the service is one cluster: the local pods at
// priority 0, then each remote cluster's gateways in meshfed's order (the DestinationRule's
// failoverPriority: the pods carry no rank label), the SNI unchanged; with the import gone,
// the local pods alone. This is the "domain squatting" case of docs/istio.md, read off the
// real istiod's EDS.
func TestIstiodLocalServiceFirst(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kube-apiserver and istiod")
	}
	if istiotest.Binary() == "" {
		t.Skip(istiotest.SkipHint)
	}
	api := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	localPods := createLocalEcho(ctx, t, api, "10.1.0.20", "10.1.0.21")

	srv, _ := startServer(t, Options{})
	src := NewSource(srv, BuildOptions{}, nil)
	go func() { _ = src.Run(ctx) }()
	src.Update(map[string]*Service{"demo/echo": echoPlan(
		gw("west", "r1", "r1-b", 2, "127.0.0.21", "127.0.0.22"),
		gw("north", "r2", "r2-a", 3, "127.0.0.31"),
	)})
	waitState(t, srv)

	mesh := fmt.Sprintf("configSources:\n- address: xds://%s\n- address: k8s://\ntrustDomain: east.example\n", srv.Addr())
	ist := istiotest.Start(t, istiotest.Config{APIServer: api, ClusterID: "east", MeshConfig: []byte(mesh)})
	sc := eastClient(t, ist.XDSAddr, 0)

	// The local endpoints: at priority 0, whatever their locality and weight (istiod's own).
	local := func(s istiotest.Snapshot) []string {
		var out []string
		for _, e := range istiotest.Flatten(s.Endpoints[echoCluster]) {
			if strings.HasPrefix(e.Address, "10.1.0.") {
				out = append(out, fmt.Sprintf("%d %s", e.Priority, e.Address))
			}
		}
		return out
	}
	remote := func(s istiotest.Snapshot) []istiotest.Endpoint {
		var out []istiotest.Endpoint
		for _, e := range istiotest.Flatten(s.Endpoints[echoCluster]) {
			if !strings.HasPrefix(e.Address, "10.1.0.") {
				out = append(out, e)
			}
		}
		return out
	}
	wantLocal := fmt.Sprint(localPods)
	west1 := istiotest.Endpoint{Priority: 1, Locality: "r1/r1-b/west", Address: "127.0.0.21:15443", Weight: 2}
	west2 := istiotest.Endpoint{Priority: 1, Locality: "r1/r1-b/west", Address: "127.0.0.22:15443", Weight: 2}
	north := istiotest.Endpoint{Priority: 2, Locality: "r2/r2-a/north", Address: "127.0.0.31:15443", Weight: 3}
	snap, took, err := sc.WaitFor(60*time.Second, func(s istiotest.Snapshot) bool {
		return fmt.Sprint(local(s)) == wantLocal && fmt.Sprint(remote(s)) == fmt.Sprint([]istiotest.Endpoint{west1, west2, north})
	})
	if err != nil {
		t.Fatalf("EDS: %v\ngot %v\nwant local %s at priority 0, then %v\nistiod: %s", err, istiotest.Flatten(snap.Endpoints[echoCluster]),
			wantLocal, []istiotest.Endpoint{west1, west2, north}, ist.LogTail(30))
	}
	t.Logf("EDS with a local Service after %v: %v", took.Round(time.Millisecond), istiotest.Flatten(snap.Endpoints[echoCluster]))
	// The real istiod asked for exactly the types meshfed knows (KnownTypes is the pinned
	// istio's list: no version skew) and ACKed every answer, meshfed's three included.
	waitfor.Cond(t, 30*time.Second, func() bool { r := srv.Report(); return len(r.Istiods) == 1 && r.Istiods[0].Synced },
		"istiod synced (every type it asked for ACKed): %+v", srv.Report())
	r := srv.Report()
	if len(r.UnknownTypes) != 0 || len(r.NACKs) != 0 {
		t.Errorf("istiod asked for types meshfed does not know %v, or NACKed %v", r.UnknownTypes, r.NACKs)
	}
	// Both ways: no KnownTypes entry that this istiod does not ask for either.
	var asked []string
	for _, ts := range r.Istiods[0].Types {
		asked = append(asked, ts.Type)
	}
	knownTypes := append([]string(nil), KnownTypes...)
	sort.Strings(knownTypes)
	if fmt.Sprint(asked) != fmt.Sprint(knownTypes) {
		t.Errorf("istiod asked for\n  %v\nKnownTypes is\n  %v", asked, knownTypes)
	}
	c := snap.Clusters[echoCluster]
	if c == nil {
		t.Fatalf("no CDS %s; have %v", echoCluster, keys(snap.Clusters))
	}
	if sni, validation := clusterTLS(t, c); sni != "outbound_.8443_._.echo.demo.svc.cluster.local" {
		t.Errorf("SNI %q (validation %s)", sni, validation)
	}
	if n := strings.Count(strings.Join(keys(snap.Clusters), " "), "echo.demo"); n != 1 {
		t.Errorf("CDS has %d clusters for echo.demo (%v): want the one service", n, keys(snap.Clusters))
	}

	// The plan changes (north first): the local pods stay at priority 0.
	src.Update(map[string]*Service{"demo/echo": echoPlan(
		gw("north", "r2", "r2-a", 3, "127.0.0.31"),
		gw("west", "r1", "r1-b", 2, "127.0.0.21", "127.0.0.22"),
	)})
	north.Priority, west1.Priority, west2.Priority = 1, 2, 2
	if snap, took, err = sc.WaitFor(30*time.Second, func(s istiotest.Snapshot) bool {
		return fmt.Sprint(local(s)) == wantLocal && fmt.Sprint(remote(s)) == fmt.Sprint([]istiotest.Endpoint{north, west1, west2})
	}); err != nil {
		t.Fatalf("reorder: %v; got %v", err, istiotest.Flatten(snap.Endpoints[echoCluster]))
	}
	t.Logf("reorder beside the local Service at the sidecar in %v", took.Round(time.Millisecond))

	// The import goes: the service stays, with the local pods alone.
	src.Update(map[string]*Service{"demo/echo": nil})
	if snap, took, err = sc.WaitFor(30*time.Second, func(s istiotest.Snapshot) bool {
		return s.Clusters[echoCluster] != nil && fmt.Sprint(local(s)) == wantLocal && len(remote(s)) == 0
	}); err != nil {
		t.Fatalf("unimport: %v; got %v", err, istiotest.Flatten(snap.Endpoints[echoCluster]))
	}
	t.Logf("unimport: local pods alone at the sidecar after %v", took.Round(time.Millisecond))
}

// createLocalEcho makes demo/echo a Kubernetes Service of this cluster, as Kubernetes would
// have it with no kubelet: ready pods (status written here), their EndpointSlice, the port
// named "https" as in echoPlan. It returns "0 <ip>:8443" per pod (the priority expected).
func createLocalEcho(ctx context.Context, t *testing.T, api *kubetest.APIServer, ips ...string) []string {
	t.Helper()
	kc, err := kubernetes.NewForConfig(api.Config)
	if err != nil {
		t.Fatal(err)
	}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	must(kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}}, metav1.CreateOptions{}))
	// No controller-manager: the namespace's default ServiceAccount, which pods need.
	must(kc.CoreV1().ServiceAccounts("demo").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}))
	must(kc.CoreV1().Services("demo").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "echo"},
			Ports: []corev1.ServicePort{{Name: "https", Port: 8443, TargetPort: intstr.FromInt32(8443), Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{}))
	port, name, proto, ready := int32(8443), "https", corev1.ProtocolTCP, true
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "echo-local", Labels: map[string]string{discoveryv1.LabelServiceName: "echo"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}
	var want []string
	for i, ip := range ips {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("echo-%d", i), Namespace: "demo",
				Labels: map[string]string{"app": "echo", "security.istio.io/tlsMode": "istio"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "echo", Image: "echo:test"}}},
		}
		p, err := kc.CoreV1().Pods("demo").Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
		if _, err := kc.CoreV1().Pods("demo").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "demo", Name: p.Name, UID: p.UID}})
		want = append(want, fmt.Sprintf("0 %s:8443", ip))
	}
	must(kc.DiscoveryV1().EndpointSlices("demo").Create(ctx, sl, metav1.CreateOptions{}))
	sort.Strings(want)
	return want
}

// eastClient connects sidecar client-<i> of namespace demo in cluster east (10.1.0.<5+i>,
// app=client, locality r1/r1-a/east) to the istiod at addr, closed at the test's end.
func eastClient(t *testing.T, addr string, i int) *istiotest.Sidecar {
	t.Helper()
	sc, err := istiotest.ConnectSidecar(addr, istiotest.SidecarConfig{
		IP: fmt.Sprintf("10.1.0.%d", 5+i), Pod: fmt.Sprintf("client-%d", i), Namespace: "demo", ClusterID: "east", Network: "net-east",
		Labels:   map[string]string{"app": "client"},
		Locality: &corev3.Locality{Region: "r1", Zone: "r1-a", SubZone: "east"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sc.Close)
	return sc
}

// echoEDSIs is a Sidecar.WaitFor condition: the sidecar's EDS of echo is exactly eps.
func echoEDSIs(eps ...istiotest.Endpoint) func(istiotest.Snapshot) bool {
	return func(s istiotest.Snapshot) bool {
		return fmt.Sprint(istiotest.Flatten(s.Endpoints[echoCluster])) == fmt.Sprint(eps)
	}
}
