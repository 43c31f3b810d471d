package ambient

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"istio.io/istio/pkg/workloadapi"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/harness"
	"github.com/meshfed/meshfed/internal/istiotest"
	"github.com/meshfed/meshfed/internal/kubetest"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/operator"
)

const (
	host        = "echo.demo.svc.cluster.local"
	trustDomain = "mesh.example"
)

// wds is the ztunnel's view decoded: services by hostname, workloads by uid.
type wds struct {
	services  map[string]*workloadapi.Service
	workloads map[string]*workloadapi.Workload
}

func decode(t *testing.T, s istiotest.ZtunnelSnapshot) wds {
	t.Helper()
	out := wds{services: map[string]*workloadapi.Service{}, workloads: map[string]*workloadapi.Workload{}}
	for name, r := range s.Resources[istiotest.AddressType] {
		a := &workloadapi.Address{}
		if err := r.GetResource().UnmarshalTo(a); err != nil {
			t.Fatalf("WDS resource %s: %v", name, err)
		}
		switch {
		case a.GetService() != nil:
			out.services[a.GetService().GetHostname()] = a.GetService()
		case a.GetWorkload() != nil:
			out.workloads[a.GetWorkload().GetUid()] = a.GetWorkload()
		}
	}
	return out
}

// remote is one remote cluster's workload for echo as ztunnel gets it, in plain values.
type remote struct {
	Network, Gateway, Locality string
	Capacity                   uint32
	Addresses                  int
	Services                   string
	TrustDomain                string
}

// echoWorkloads are the WorkloadEntry workloads of demo/echo, by network.
func (w wds) echoWorkloads() map[string]remote {
	out := map[string]remote{}
	for _, wl := range w.workloads {
		if wl.GetNamespace() != "demo" || !strings.HasPrefix(wl.GetName(), "meshfed-echo-") {
			continue
		}
		r := remote{Network: wl.GetNetwork(), Capacity: wl.GetCapacity().GetValue(), Addresses: len(wl.GetAddresses()), TrustDomain: wl.GetTrustDomain()}
		if g := wl.GetNetworkGateway(); g != nil {
			ip, _ := netip.AddrFromSlice(g.GetAddress().GetAddress())
			r.Gateway = fmt.Sprintf("%s/%s:%d", g.GetAddress().GetNetwork(), ip, g.GetHboneMtlsPort())
		}
		if l := wl.GetLocality(); l != nil {
			r.Locality = l.GetRegion() + "/" + l.GetZone() + "/" + l.GetSubzone()
		}
		var svcs []string
		for k, pl := range wl.GetServices() {
			var ps []string
			for _, p := range pl.GetPorts() {
				ps = append(ps, fmt.Sprintf("%d->%d", p.GetServicePort(), p.GetTargetPort()))
			}
			svcs = append(svcs, k+"="+strings.Join(ps, ","))
		}
		sort.Strings(svcs)
		r.Services = strings.Join(svcs, " ")
		out[wl.GetNetwork()] = r
	}
	return out
}

// gatewayWorkloads are the network gateways' workloads (istio-remote Gateways), by
// network: "SA-namespace/SA address trust-domain".
func (w wds) gatewayWorkloads() map[string]string {
	out := map[string]string{}
	for uid, wl := range w.workloads {
		if !strings.HasPrefix(uid, "NetworkGateway/") {
			continue
		}
		var addrs []string
		for _, a := range wl.GetAddresses() {
			ip, _ := netip.AddrFromSlice(a)
			addrs = append(addrs, ip.String())
		}
		out[wl.GetNetwork()] = fmt.Sprintf("%s/%s %s %s", wl.GetNamespace(), wl.GetServiceAccount(), strings.Join(addrs, ","), wl.GetTrustDomain())
	}
	return out
}

func servicePorts(s *workloadapi.Service) string {
	var ps []string
	for _, p := range s.GetPorts() {
		ps = append(ps, fmt.Sprintf("%d->%d", p.GetServicePort(), p.GetTargetPort()))
	}
	return strings.Join(ps, ",")
}

// gatewayAPICRDs are the standard-channel CRDs of sigs.k8s.io/gateway-api at the version
// the pinned istio requires (this module's build list), from the module cache.
func gatewayAPICRDs(t *testing.T) [][]byte {
	t.Helper()
	// The module's version here, and the module cache it is unpacked in (istiod's build
	// unpacked it; go.sum holds only its go.mod hash, so `go list -m` gives no directory).
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "sigs.k8s.io/gateway-api")
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=readonly", "GOWORK=off")
	ver, err := cmd.Output()
	if err != nil {
		t.Fatalf("sigs.k8s.io/gateway-api's version (go list -m): %v", err)
	}
	cache, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(strings.TrimSpace(string(cache)), "sigs.k8s.io", "gateway-api@"+strings.TrimSpace(string(ver)))
	files, err := filepath.Glob(filepath.Join(dir, "config", "crd", "standard", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Skipf("Gateway API standard CRDs: none in %s (%v): `go mod download sigs.k8s.io/gateway-api` in hack/interop/ambient", dir, err)
	}
	var docs [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range bytes.Split(b, []byte("\n---")) {
			if bytes.Contains(d, []byte("kind: CustomResourceDefinition")) {
				docs = append(docs, d)
			}
		}
	}
	return docs
}

var weGVR = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "workloadentries"}

// entryEvents records when WorkloadEntries of demo appear in and leave the kube-apiserver
// (what meshfed wrote, as the apiserver announces it), by the entry's cluster label.
type entryEvents struct {
	mu   sync.Mutex
	seen map[string]time.Time // "ADDED west", "DELETED north" -> first time since reset
}

func watchEntries(ctx context.Context, t *testing.T, dyn dynamic.Interface) *entryEvents {
	t.Helper()
	w, err := dyn.Resource(weGVR).Namespace("demo").Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ev := &entryEvents{seen: map[string]time.Time{}}
	go func() {
		defer w.Stop()
		for e := range w.ResultChan() {
			if e.Type != watch.Added && e.Type != watch.Deleted {
				continue
			}
			m, ok := e.Object.(metav1.Object)
			if !ok {
				continue
			}
			k := string(e.Type) + " " + m.GetLabels()["federation.meshfed.io/cluster"]
			ev.mu.Lock()
			if _, ok := ev.seen[k]; !ok {
				ev.seen[k] = time.Now()
			}
			ev.mu.Unlock()
		}
	}()
	return ev
}

func (e *entryEvents) reset() {
	e.mu.Lock()
	e.seen = map[string]time.Time{}
	e.mu.Unlock()
}

func (e *entryEvents) at(k string) (time.Time, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	at, ok := e.seen[k]
	return at, ok
}

func echoExports(addrs ...string) string {
	var eps []string
	for _, a := range addrs {
		eps = append(eps, "{address: "+a+", hbonePort: 15008, serviceAccount: echo}")
	}
	return fmt.Sprintf("services:\n  - {name: echo, namespace: demo, ports: [{name: tcp-echo, port: 9000}], endpoints: [%s]}\n", strings.Join(eps, ", "))
}

// TestIstiodAmbientWDS: istiod in ambient mode (PILOT_ENABLE_AMBIENT=true,
// AMBIENT_ENABLE_MULTI_NETWORK off) on east's kube-apiserver, where east's federation
// (--istio-ambient) writes what docs/istio.md "Ambient" says; a fake ztunnel subscribes to
// istiod's WDS. Asserted on what istiod sends it, decoded with istio's workloadapi:
//
//   - one network-gateway workload per remote cluster's istio-remote Gateway: its HBONE
//     address, network, and the identity ztunnel will demand of it
//     (ns istio-system, sa meshfed-<cluster>-istio-remote, the mesh's trust domain);
//   - the service echo.demo.svc.cluster.local with its port and subjectAltNames (the
//     exports' service account in the shared trust domain);
//   - one workload per remote cluster (west, north) selected by the ServiceEntry: no
//     address, network = that cluster's, networkGateway = its HBONE gateway (address and
//     port), capacity = its ready HBONE endpoints, locality region/zone/cluster;
//   - a cordon drill on west removes west's workload; lifting it brings it back;
//     unexporting everywhere removes the service and the workloads;
//   - the same entries with AMBIENT_ENABLE_MULTI_NETWORK=true (a second istiod): what
//     ztunnel gets then.
//
// Each step is timed from meshfed's write (the exports file; and the WorkloadEntry as the
// kube-apiserver announces it) to the WDS at the fake ztunnel.
func TestIstiodAmbientWDS(t *testing.T) {
	if istiotest.Binary() == "" {
		t.Skip(istiotest.SkipHint)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	api := kubetest.Start(t, kubetest.WithMCSCRDs())
	// Ambient istiod runs the Gateway API controller, whose informers (GatewayClass, routes,
	// ...) never sync without their CRDs: the whole standard channel, as an ambient install has.
	if err := kubetest.ApplyCRDs(ctx, api.Config, gatewayAPICRDs(t)...); err != nil {
		t.Fatal(err)
	}
	if err := istiotest.PrepareCluster(ctx, api.Config, os.Getenv(istiotest.EnvCRDs)); err != nil {
		t.Fatal(err)
	}
	kc, err := kubernetes.NewForConfig(api.Config)
	if err != nil {
		t.Fatal(err)
	}
	// east's own network, on the system namespace (istiod's ambient index reads it there).
	ns, err := kc.CoreV1().Namespaces().Get(ctx, istiotest.Namespace, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	ns.Labels["topology.istio.io/network"] = "net-east"
	if _, err := kc.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(api.Config)
	if err != nil {
		t.Fatal(err)
	}
	events := watchEntries(ctx, t, dyn)

	ambientEnv := map[string]string{"PILOT_ENABLE_AMBIENT": "true"}
	mesh := []byte("trustDomain: " + trustDomain + "\n")
	ist := istiotest.Start(t, istiotest.Config{APIServer: api, ClusterID: "east", MeshConfig: mesh, Env: ambientEnv})
	zt, err := istiotest.ConnectZtunnel(ist.XDSAddr, istiotest.ZtunnelConfig{IP: "10.1.0.2", Pod: "ztunnel-east-0", ClusterID: "east"})
	if err != nil {
		t.Fatal(err)
	}
	defer zt.Close()

	westGW, northGW := harness.ClusterIP(1)+":15008", harness.ClusterIP(2)+":15008"
	// One Istio trust domain for the three clusters, owned by east (join
	// --share-trust-domain-with): the only setup where ambient double HBONE can pass
	// (docs/istio.md, "Identity across trust domains").
	f, err := harness.Start(ctx, harness.Options{Clusters: []harness.ClusterSpec{
		{Name: "east", TrustDomain: trustDomain, Kube: &harness.KubeSpec{Config: api.Config, IstioAmbient: true}},
		{Name: "west", TrustDomain: trustDomain, ShareTrustDomainWith: "east", HBONEGateways: []string{westGW}},
		{Name: "north", TrustDomain: trustDomain, ShareTrustDomainWith: "east", Region: "region-2", HBONEGateways: []string{northGW}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	west, north := f.Cluster("west"), f.Cluster("north")

	// The istio-remote Gateways become network-gateway workloads, with the identity ztunnel
	// will demand of each gateway.
	wantGWs := map[string]string{
		"net-west":  "istio-system/meshfed-west-istio-remote " + harness.ClusterIP(1) + " " + trustDomain,
		"net-north": "istio-system/meshfed-north-istio-remote " + harness.ClusterIP(2) + " " + trustDomain,
	}
	snap, took, err := zt.WaitFor(60*time.Second, func(s istiotest.ZtunnelSnapshot) bool {
		return fmt.Sprint(decode(t, s).gatewayWorkloads()) == fmt.Sprint(wantGWs)
	})
	if err != nil {
		t.Fatalf("network gateways in WDS: %v\ngot %v\nwant %v\nistiod: %s", err, decode(t, snap).gatewayWorkloads(), wantGWs, ist.LogTail(30))
	}
	t.Logf("network gateway workloads at the ztunnel %v after the federation started: %v", took.Round(time.Millisecond), wantGWs)

	// step exports or changes something at `at` and waits for the ztunnel's view to hold;
	// it logs meshfed's part (to the WorkloadEntry event, when one is named) and istiod's.
	step := func(what string, at time.Time, event string, cond func(wds) bool) wds {
		t.Helper()
		snap, _, err := zt.WaitFor(60*time.Second, func(s istiotest.ZtunnelSnapshot) bool { return cond(decode(t, s)) })
		w := decode(t, snap)
		if err != nil {
			t.Fatalf("%s: %v\nservice %v\nworkloads %+v\nistiod: %s", what, err, w.services[host], w.echoWorkloads(), ist.LogTail(30))
		}
		msg := fmt.Sprintf("%s: at the ztunnel %v after meshfed's write", what, snap.At.Sub(at).Round(time.Millisecond))
		if e, ok := events.at(event); ok && event != "" {
			msg += fmt.Sprintf(" (write -> WorkloadEntry %s in the kube-apiserver %v; -> WDS %v)", strings.ToLower(event),
				e.Sub(at).Round(time.Millisecond), snap.At.Sub(e).Round(time.Millisecond))
		}
		t.Log(msg)
		return w
	}

	wantWest := remote{Network: "net-west", Gateway: "net-west/" + westGW, Locality: "region-1/region-1-a/west", Capacity: 2,
		Services: "demo/" + host + "=9000->9000", TrustDomain: trustDomain}
	wantNorth := remote{Network: "net-north", Gateway: "net-north/" + northGW, Locality: "region-2/region-2-a/north", Capacity: 1,
		Services: "demo/" + host + "=9000->9000", TrustDomain: trustDomain}
	both := map[string]remote{"net-west": wantWest, "net-north": wantNorth}
	hasService := func(w wds) bool { s := w.services[host]; return s != nil && servicePorts(s) == "9000->9000" }

	events.reset()
	at := time.Now()
	if err := west.SetExports(echoExports(harness.WorkloadIP(1, 0), harness.WorkloadIP(1, 1))); err != nil {
		t.Fatal(err)
	}
	if err := north.SetExports(echoExports(harness.WorkloadIP(2, 0))); err != nil {
		t.Fatal(err)
	}
	w := step("exported by west and north", at, "ADDED west", func(w wds) bool {
		return hasService(w) && fmt.Sprint(w.echoWorkloads()) == fmt.Sprint(both)
	})
	svc := w.services[host]
	var vips []string
	for _, a := range svc.GetAddresses() {
		ip, _ := netip.AddrFromSlice(a.GetAddress())
		vips = append(vips, a.GetNetwork()+"/"+ip.String())
	}
	t.Logf("service %s/%s %s ports %s VIPs %v subjectAltNames %v", svc.GetNamespace(), svc.GetName(), svc.GetHostname(), servicePorts(svc), vips, svc.GetSubjectAltNames())
	// The exports name the workloads' service account: the SAN ztunnel will demand of the
	// destination (the inner HBONE layer) is in istiod's Service.
	if want := []string{"spiffe://" + trustDomain + "/ns/demo/sa/echo"}; fmt.Sprint(svc.GetSubjectAltNames()) != fmt.Sprint(want) {
		t.Errorf("service subjectAltNames %v, want %v", svc.GetSubjectAltNames(), want)
	}
	for net, r := range w.echoWorkloads() {
		t.Logf("workload on %s: %+v", net, r)
		if r.Addresses != 0 {
			t.Errorf("%s: the remote workload has %d addresses, want none (reached through the network gateway)", net, r.Addresses)
		}
	}

	// A cordon drill on west: west's workload goes, north's stays.
	events.reset()
	at = time.Now()
	cordon, err := operator.StartCordon(ctx, west.Store, &records.Drill{ID: "ambient-wds", Cluster: "west", Until: time.Now().Add(time.Minute),
		StartedBy: "test", StartedAt: time.Now()}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	step("west cordoned", at, "DELETED west", func(w wds) bool {
		return hasService(w) && fmt.Sprint(w.echoWorkloads()) == fmt.Sprint(map[string]remote{"net-north": wantNorth})
	})
	events.reset()
	at = time.Now()
	if err := cordon.Lift(ctx); err != nil {
		t.Fatal(err)
	}
	step("cordon lifted", at, "ADDED west", func(w wds) bool {
		return hasService(w) && fmt.Sprint(w.echoWorkloads()) == fmt.Sprint(both)
	})

	// West loses a ready endpoint: the capacity follows.
	events.reset()
	at = time.Now()
	if err := west.SetExports(echoExports(harness.WorkloadIP(1, 0))); err != nil {
		t.Fatal(err)
	}
	wantWest1 := wantWest
	wantWest1.Capacity = 1
	step("west down to one HBONE endpoint", at, "", func(w wds) bool {
		return hasService(w) && fmt.Sprint(w.echoWorkloads()) == fmt.Sprint(map[string]remote{"net-west": wantWest1, "net-north": wantNorth})
	})

	// Unexported everywhere: the service and its workloads go; the gateways stay.
	events.reset()
	at = time.Now()
	for _, c := range []*harness.Cluster{west, north} {
		if err := c.SetExports("services: []\n"); err != nil {
			t.Fatal(err)
		}
	}
	step("unexported", at, "DELETED west", func(w wds) bool {
		return w.services[host] == nil && len(w.echoWorkloads()) == 0 && fmt.Sprint(w.gatewayWorkloads()) == fmt.Sprint(wantGWs)
	})

	// The same entries, read by an istiod with AMBIENT_ENABLE_MULTI_NETWORK=true.
	t.Run("multi-network-on", func(t *testing.T) {
		events.reset()
		if err := west.SetExports(echoExports(harness.WorkloadIP(1, 0), harness.WorkloadIP(1, 1))); err != nil {
			t.Fatal(err)
		}
		if err := north.SetExports(echoExports(harness.WorkloadIP(2, 0))); err != nil {
			t.Fatal(err)
		}
		// The first istiod shows the entries are written (and what ztunnel got then).
		step("exported again (multi-network off)", time.Now(), "", func(w wds) bool {
			return hasService(w) && fmt.Sprint(w.echoWorkloads()) == fmt.Sprint(both)
		})
		env := map[string]string{"PILOT_ENABLE_AMBIENT": "true", "AMBIENT_ENABLE_MULTI_NETWORK": "true"}
		mn := istiotest.Start(t, istiotest.Config{APIServer: api, ClusterID: "east", MeshConfig: mesh, Env: env, PodName: "istiod-multinet"})
		zt2, err := istiotest.ConnectZtunnel(mn.XDSAddr, istiotest.ZtunnelConfig{IP: "10.1.0.3", Pod: "ztunnel-east-1", ClusterID: "east"})
		if err != nil {
			t.Fatal(err)
		}
		defer zt2.Close()
		// istiod answers a new subscription from its synced index (it is /ready): the first
		// answer holding the service is istiod's whole view of it.
		snap, took, err := zt2.WaitFor(60*time.Second, func(s istiotest.ZtunnelSnapshot) bool { return decode(t, s).services[host] != nil })
		w := decode(t, snap)
		if err != nil {
			t.Fatalf("multi-network on: no service %s in WDS: %v\nworkloads %v\nistiod: %s", host, err, w.echoWorkloads(), mn.LogTail(30))
		}
		t.Logf("multi-network on: service after %v; echo workloads %+v; gateway workloads %v", took.Round(time.Millisecond), w.echoWorkloads(), w.gatewayWorkloads())
		var uids []string
		for uid, wl := range w.workloads {
			if wl.GetNamespace() == "demo" {
				uids = append(uids, uid)
			}
		}
		slices.Sort(uids)
		t.Logf("multi-network on: workloads of namespace demo: %v", uids)
		if len(w.echoWorkloads()) != 0 {
			t.Errorf("multi-network on: the remote WorkloadEntries reached ztunnel (%+v): docs/istio.md says the mode drops them; re-read", w.echoWorkloads())
		}
	})
}
