package harness_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"

	"github.com/meshfed/meshfed/federation/health"
	"github.com/meshfed/meshfed/federation/istio"
	"github.com/meshfed/meshfed/harness"
	"github.com/meshfed/meshfed/internal/istiotest"
	"github.com/meshfed/meshfed/internal/kubetest"
	"github.com/meshfed/meshfed/internal/testpki"
	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/operator"
	"github.com/meshfed/meshfed/trust/federate"
)

func echoExportsN(addrs ...string) string {
	_, port, _ := net.SplitHostPort(addrs[0])
	var eps []string
	for _, a := range addrs {
		h, _, _ := net.SplitHostPort(a)
		eps = append(eps, "{address: "+h+"}")
	}
	return fmt.Sprintf("services:\n  - name: echo\n    namespace: demo\n    ports: [{name: tls, port: 8443, targetPort: %s}]\n    endpoints: [%s]\n", port, strings.Join(eps, ", "))
}

const istioEchoCluster = "outbound|8443||echo.demo.svc.cluster.local"

// otherExport is one more service, demo/other, on a workload (an item of an exports list).
func otherExport(addr string) string {
	h, port, _ := net.SplitHostPort(addr)
	return fmt.Sprintf("  - name: other\n    namespace: demo\n    ports: [{name: tls, port: 8443, targetPort: %s}]\n    endpoints: [{address: %s}]\n", port, h)
}

// TestIstiodFedByFederation: three clusters (east imports demo/echo that west, same region,
// and north, another region, export; gateways and health checks live); east's federation
// serves istiod over MCP; istiod runs with the settings `meshfed istio config` makes
// (operator.IstioConfig); a sidecar of east gets CDS with meshfed's SNI and EDS in meshfed's
// order. Then west's gateway dies (connections reset), comes back, is blackholed, comes
// back, is cordoned by a drill,
// north unexports, etcd stops (echo's EDS stays, checked at a later push: demo/other, which
// west and north also export, follows a fault at north's gateway), east's federation and
// istiod restart: each step is asserted on what istiod sends the sidecar, with its delay.
func TestIstiodFedByFederation(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a federation, kube-apiserver and istiod")
	}
	if istiotest.Binary() == "" {
		t.Skip(istiotest.SkipHint)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var wls []*harness.Workload
	for _, w := range []struct{ cluster, name, addr string }{
		{"west", "echo-0", harness.WorkloadIP(1, 0)}, {"west", "echo-1", harness.WorkloadIP(1, 1)}, {"north", "echo-0", harness.WorkloadIP(2, 0)},
	} {
		wl, err := harness.StartWorkload(w.cluster, w.name, w.addr+":0", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer wl.Close()
		wls = append(wls, wl)
	}
	// Both west workloads on one port, so one export lists both.
	_, p0, _ := net.SplitHostPort(wls[0].Addr)
	_, p1, _ := net.SplitHostPort(wls[1].Addr)
	westExports := echoExportsN(wls[0].Addr)
	if p0 == p1 {
		westExports = echoExportsN(wls[0].Addr, wls[1].Addr)
	}
	// West and north also export demo/other: a change of its plan is the trigger of the
	// "nothing changes for echo" check while etcd is down (below).
	westExports += otherExport(wls[0].Addr)
	// Health checks every 200 ms and reassignments at most every 1.5 s, as in
	// federation/xds's TestFailoverEndToEnd: the bounds are the plan's, istiod adds its own
	// delay on top (measured here).
	f, err := harness.Start(ctx, harness.Options{Health: health.Options{Interval: 200 * time.Millisecond, Timeout: 150 * time.Millisecond},
		MinReassign: 1500 * time.Millisecond, Clusters: []harness.ClusterSpec{
			{Name: "east", IstioMCP: true},
			{Name: "west", Exports: westExports, GatewayFaults: true},
			{Name: "north", Region: "region-2", Exports: echoExportsN(wls[2].Addr) + otherExport(wls[2].Addr), GatewayFaults: true},
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	east, west, north := f.Cluster("east"), f.Cluster("west"), f.Cluster("north")
	waitfor.Cond(t, 20*time.Second, func() bool { return east.Agent().Istio.Ready() == nil }, "east's MCP source has a plan")

	// The config source beside istiod (`meshfed istio source`): it follows east's federation
	// and keeps the last state in a file; istiod points at it.
	relayFile := filepath.Join(t.TempDir(), "istio-state.json")
	relay, stopRelay := startRelayOn(t, "127.0.0.1:0", relayFile, east.IstioMCPAddr)
	defer func() { stopRelay() }()
	waitfor.Cond(t, 20*time.Second, func() bool { return relay.Ready() == nil }, "the relay has east's state")

	settings, warnings, err := operator.IstioConfig(ctx, east.Store, operator.IstioConfigOptions{Cluster: "east", MCPAddress: relay.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range warnings {
		t.Log("istio config:", w)
	}
	mesh, err := settings.MeshConfigYAML()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("meshConfig:\n%s", mesh)
	api := kubetest.Start(t)
	ist := istiotest.Start(t, istiotest.Config{APIServer: api, ClusterID: settings.Env["CLUSTER_ID"], MeshConfig: mesh, Env: settings.Env})

	sc, err := istiotest.ConnectSidecar(ist.XDSAddr, istiotest.SidecarConfig{
		IP: "10.1.0.5", Pod: "client-0", Namespace: "demo", ClusterID: "east", Network: "net-east",
		Labels:   map[string]string{"app": "client"},
		Locality: &corev3.Locality{Region: "region-1", Zone: "region-1-a", SubZone: "east"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()

	westN := uint32(1)
	if p0 == p1 {
		westN = 2
	}
	westEP := func(prio uint32) istiotest.Endpoint {
		return istiotest.Endpoint{Priority: prio, Locality: "region-1/region-1-a/west", Address: west.GatewayAddr, Weight: westN}
	}
	northEP := func(prio uint32) istiotest.Endpoint {
		return istiotest.Endpoint{Priority: prio, Locality: "region-2/region-2-a/north", Address: north.GatewayAddr, Weight: 1}
	}
	expect := func(what string, timeout time.Duration, eps ...istiotest.Endpoint) time.Duration {
		t.Helper()
		snap, took, err := sc.WaitFor(timeout, func(s istiotest.Snapshot) bool {
			return fmt.Sprint(istiotest.Flatten(s.Endpoints[istioEchoCluster])) == fmt.Sprint(eps)
		})
		if err != nil {
			t.Fatalf("%s: %v\nEDS %v\nwant %v\nistiod:\n%s", what, err, istiotest.Flatten(snap.Endpoints[istioEchoCluster]), eps, ist.LogTail(20))
		}
		t.Logf("%s: at the sidecar in %v", what, took.Round(time.Millisecond))
		return took
	}
	expect("first EDS (west same region first, north next)", 60*time.Second, westEP(0), northEP(1))

	snap := sc.Snapshot()
	c := snap.Clusters[istioEchoCluster]
	if c == nil {
		t.Fatal("no CDS for echo")
	}
	sni := ""
	for _, m := range c.GetTransportSocketMatches() {
		u := &tlsv3.UpstreamTlsContext{}
		if m.GetTransportSocket().GetTypedConfig().UnmarshalTo(u) == nil && u.GetSni() != "" {
			sni = u.GetSni()
		}
	}
	if want := "outbound_.8443_._.echo.demo.svc.cluster.local"; sni != want {
		t.Errorf("CDS SNI %q, want %q", sni, want)
	}

	// West's gateway goes away: connections refused and reset, the health checker marks it
	// down at once, the plan drops west, istiod follows.
	west.Fault.Kill()
	if took := expect("west's gateway refusing connections", 10*time.Second, northEP(0)); took > time.Second {
		t.Errorf("west left the sidecar's EDS after %v, bound 1s (RST)", took)
	}
	if err := west.Fault.Restore(); err != nil {
		t.Fatal(err)
	}
	expect("west's gateway back", 30*time.Second, westEP(0), northEP(1))

	// West's gateway is blackholed: connections stall, new ones are never answered; the
	// health stream's pings go unanswered for 2 s, the plan drops west, istiod follows.
	west.Fault.Blackhole()
	if took := expect("west's gateway blackholed", 15*time.Second, northEP(0)); took > 3*time.Second+time.Second {
		t.Errorf("west left the sidecar's EDS after %v, bound 3s (+1s margin for this loaded machine) (blackhole)", took)
	}
	if err := west.Fault.Restore(); err != nil {
		t.Fatal(err)
	}
	expect("west's gateway back after the blackhole", 30*time.Second, westEP(0), northEP(1))

	// A drill cordons west.
	cordon, err := operator.StartCordon(ctx, west.Store, &records.Drill{ID: "istio-e2e", Cluster: "west", Until: time.Now().Add(time.Minute),
		StartedBy: "test", StartedAt: time.Now()}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if took := expect("west cordoned by a drill", 10*time.Second, northEP(0)); took > time.Second {
		t.Errorf("cordon reached the sidecar after %v, bound 1s", took)
	}
	if err := cordon.Lift(ctx); err != nil {
		t.Fatal(err)
	}
	expect("cordon lifted", 30*time.Second, westEP(0), northEP(1))

	// North unexports echo (and keeps demo/other).
	if err := north.SetExports("services:\n" + otherExport(wls[2].Addr)); err != nil {
		t.Fatal(err)
	}
	expect("north unexported", 30*time.Second, westEP(0))

	// etcd stops: istiod keeps the last state (nothing is withdrawn). Checked on conditions,
	// not over a time window: once east's federation has lost its heartbeat lease (it knows
	// etcd is gone), a fault at north's gateway still changes demo/other's plan (health
	// checks need no etcd). When the sidecar has that change, every earlier push of the
	// federation has reached it too (one ordered stream through the relay and istiod), and
	// echo's EDS must still be west alone.
	const otherCluster = "outbound|8443||other.demo.svc.cluster.local"
	hasNorth := func(s istiotest.Snapshot) bool {
		for _, e := range istiotest.Flatten(s.Endpoints[otherCluster]) {
			if e.Address == north.GatewayAddr {
				return true
			}
		}
		return false
	}
	if snap, _, err := sc.WaitFor(30*time.Second, hasNorth); err != nil {
		t.Fatalf("demo/other: no EDS with north's gateway %s: %v (%v)", north.GatewayAddr, err, istiotest.Flatten(snap.Endpoints[otherCluster]))
	}
	f.Etcd.Close()
	f.Etcd = nil // closed: not again at f.Close
	stopped := time.Now()
	waitfor.Cond(t, 30*time.Second, func() bool { return !east.Federation().HeartbeatAlive() }, "east's federation loses its heartbeat lease with etcd down")
	lost := time.Since(stopped)
	north.Fault.Kill()
	snap, took, err := sc.WaitFor(15*time.Second, func(s istiotest.Snapshot) bool { return s.Endpoints[otherCluster] != nil && !hasNorth(s) })
	if err != nil {
		t.Fatalf("with etcd down, north's gateway fault did not reach the sidecar (demo/other): %v (%v)\nistiod:\n%s", err, istiotest.Flatten(snap.Endpoints[otherCluster]), ist.LogTail(20))
	}
	if got := istiotest.Flatten(snap.Endpoints[istioEchoCluster]); fmt.Sprint(got) != fmt.Sprint([]istiotest.Endpoint{westEP(0)}) {
		t.Fatalf("with etcd down, EDS changed to %v", got)
	}
	t.Logf("etcd down: heartbeat lease lost after %v; a later plan change (north's gateway fault on demo/other) at the sidecar in %v; echo's EDS unchanged",
		lost.Round(time.Millisecond), took.Round(time.Millisecond))

	// With etcd still down, east's federation stops and the config source beside istiod
	// restarts too (a pod restart, say): istiod restarts meanwhile, and starts, because its
	// source answers from its file; its sidecars get the last state.
	if err := east.StopFederation(); err != nil {
		t.Fatal(err)
	}
	stopRelay()
	relay, stopRelay = startRelayOn(t, relay.Addr(), relayFile, east.IstioMCPAddr)
	if relay.Ready() != nil {
		t.Fatal("the restarted config source has no state from its file")
	}
	if err := ist.Restart(ctx); err != nil {
		t.Fatalf("istiod restart with etcd and the federation down: %v", err)
	}
	sc2, err := istiotest.ConnectSidecar(ist.XDSAddr, istiotest.SidecarConfig{
		IP: "10.1.0.6", Pod: "client-1", Namespace: "demo", ClusterID: "east", Network: "net-east",
		Labels:   map[string]string{"app": "client"},
		Locality: &corev3.Locality{Region: "region-1", Zone: "region-1-a", SubZone: "east"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sc2.Close()
	if _, took, err := sc2.WaitFor(60*time.Second, func(s istiotest.Snapshot) bool {
		return fmt.Sprint(istiotest.Flatten(s.Endpoints[istioEchoCluster])) == fmt.Sprint([]istiotest.Endpoint{westEP(0)})
	}); err != nil {
		t.Fatalf("after etcd down + federation down + istiod restart: %v\n%s", err, ist.LogTail(20))
	} else {
		t.Logf("istiod restarted with etcd and the federation down: the new sidecar got the last state in %v", took.Round(time.Millisecond))
	}

	// East's federation comes back with etcd still down: it serves its own last state from
	// its file; the relay follows it again and nothing changes at the sidecar.
	if err := east.StartFederation(ctx); err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 20*time.Second, func() bool { return len(east.Agent().Istio.Status()) == 1 }, "the relay reconnects to the restarted federation")
	if got := istiotest.Flatten(sc2.Snapshot().Endpoints[istioEchoCluster]); fmt.Sprint(got) != fmt.Sprint([]istiotest.Endpoint{westEP(0)}) {
		t.Fatalf("after the federation restart, EDS is %v", got)
	}
}

// startRelayOn starts a config source on a given address (retrying while the port is in
// TIME_WAIT or not yet released).
func startRelayOn(t *testing.T, addr, file, upstream string) (*istio.Server, context.CancelFunc) {
	t.Helper()
	srv, err := istio.NewServer(nil, nil, istio.Options{Listen: addr, StateFile: file})
	if err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 10*time.Second, func() bool { return srv.Listen() == nil }, "listen on %s again", addr)
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { _ = srv.Run(rctx); done <- struct{}{} }()
	go func() {
		_ = (&istio.Relay{Upstream: upstream, Node: "relay", Local: srv}).Run(rctx)
		done <- struct{}{}
	}()
	return srv, func() { stop(); <-done; <-done }
}

// TestIstioStatusInKeyspace: east's federation publishes the istiods it feeds under
// acks/east/istio/<instance>, on its own lease: `meshfed status` shows an istiod behind a
// `meshfed istio source` relay, synced after its ACKs, then its NACK (with a warning); the
// record goes with the federation.
func TestIstioStatusInKeyspace(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a federation")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	wl, err := harness.StartWorkload("west", "echo-0", harness.WorkloadIP(1, 0)+":0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wl.Close()
	f, err := harness.Start(ctx, harness.Options{Clusters: []harness.ClusterSpec{
		{Name: "east", IstioMCP: true},
		{Name: "west", Exports: echoExportsN(wl.Addr)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	east := f.Cluster("east")
	status := func() *operator.Status {
		t.Helper()
		s, err := operator.GetStatus(ctx, east.Store, operator.StatusOptions{NoProbe: true})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	istioOf := func(s *operator.Status) *operator.IstioStatus {
		for _, c := range s.Clusters {
			if c.Name == "east" {
				return c.Istio
			}
		}
		return nil
	}
	var s *operator.Status
	waitfor.Cond(t, 20*time.Second, func() bool { s = status(); is := istioOf(s); return is != nil && len(is.Replicas) == 1 }, "east's MCP status in etcd")
	if is := istioOf(s); len(is.Istiods) != 0 {
		t.Fatalf("istiods before any connected: %+v", is.Istiods)
	}

	relay, stopRelay := startRelayOn(t, "127.0.0.1:0", filepath.Join(t.TempDir(), "state.json"), east.IstioMCPAddr)
	defer stopRelay()
	waitfor.Cond(t, 20*time.Second, func() bool { return relay.Ready() == nil }, "the relay has east's state")
	ist := istiotest.DialMCP(t, relay.Addr())
	ist.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "istiod-east-0"}, TypeUrl: istio.TypeServiceEntry})
	r := ist.Next(20 * time.Second)
	ist.Send(&discoveryv3.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()})
	waitfor.Cond(t, 20*time.Second, func() bool {
		s = status()
		is := istioOf(s)
		return is != nil && len(is.Istiods) == 1 && is.Istiods[0].Synced
	}, "the istiod behind the relay, synced, in meshfed status")
	i := istioOf(s).Istiods[0]
	if i.Node != "istiod-east-0" || i.Via != "relay" || i.LastPush == nil || i.LastAck == nil {
		t.Fatalf("istiod in status: %+v", i)
	}
	var tb strings.Builder
	if err := s.WriteTable(&tb); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tb.String(), "istiod-east-0") || !strings.Contains(tb.String(), "ACKed (synced)") {
		t.Fatalf("status table:\n%s", tb.String())
	}

	// A second service (echo2) changes the ServiceEntry state; istiod rejects it.
	if err := f.Cluster("west").SetExports(strings.Replace(echoExportsN(wl.Addr), "name: echo", "name: echo2", 1) + strings.TrimPrefix(echoExportsN(wl.Addr), "services:\n")); err != nil {
		t.Fatal(err)
	}
	r = ist.Next(20 * time.Second)
	ist.Send(&discoveryv3.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce(),
		ErrorDetail: &statuspb.Status{Code: int32(codes.InvalidArgument), Message: "bad ServiceEntry"}})
	waitfor.Cond(t, 20*time.Second, func() bool {
		s = status()
		is := istioOf(s)
		return is != nil && len(is.Istiods) == 1 && len(is.Istiods[0].NACKed) == 1 && len(is.NACKs) == 1
	}, "the NACK in meshfed status")
	if w := strings.Join(s.Warnings, "\n"); !strings.Contains(w, "bad ServiceEntry") {
		t.Fatalf("no warning about the NACK: %s", w)
	}

	// The record goes with the federation (its lease is revoked at stop).
	if err := east.StopFederation(); err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 20*time.Second, func() bool { return istioOf(status()) == nil }, "the record gone with the federation")
}

// TestIstioMCPFollowsGatewayFaults: what east's federation gives istiod (its MCP state)
// drops west's gateway when west's gateway resets connections (< 1 s) and when it is
// blackholed (the health stream's 2 s without an answer: ≤ 3 s), and takes it back after.
// No istiod here: TestIstiodFedByFederation adds istiod's own delay on top.
func TestIstioMCPFollowsGatewayFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a federation")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var addrs []string
	for i, cl := range []string{"west", "north"} {
		wl, err := harness.StartWorkload(cl, "echo-0", harness.WorkloadIP(i+1, 0)+":0", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer wl.Close()
		addrs = append(addrs, wl.Addr)
	}
	f, err := harness.Start(ctx, harness.Options{Health: health.Options{Interval: 200 * time.Millisecond, Timeout: 150 * time.Millisecond},
		MinReassign: 1500 * time.Millisecond, Clusters: []harness.ClusterSpec{
			{Name: "east", IstioMCP: true},
			{Name: "west", Exports: echoExportsN(addrs[0]), GatewayFaults: true},
			{Name: "north", Region: "region-2", Exports: echoExportsN(addrs[1])},
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	srv, west := f.Cluster("east").Agent().Istio, f.Cluster("west")
	// hasWest: a WorkloadEntry of west (its gateway address) is in the served state.
	hasWest := func() bool {
		rs, err := srv.State().Resources(istio.TypeWorkloadEntry)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.GetMetadata().GetLabels()[istio.LabelCluster] == "west" {
				return true
			}
		}
		return false
	}
	// wait measures how long until hasWest() == want, woken by every new state.
	wait := func(what string, want bool, timeout time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		deadline := time.After(timeout)
		for {
			ch := srv.StatusChanged()
			if srv.State() != nil && hasWest() == want {
				took := time.Since(start)
				t.Logf("%s: in the MCP state after %v", what, took.Round(time.Millisecond))
				return took
			}
			select {
			case <-ch:
			case <-deadline:
				t.Fatalf("%s: not in the MCP state within %v", what, timeout)
			}
		}
	}
	wait("west's gateway in the plan", true, 30*time.Second)

	west.Fault.Kill()
	if took := wait("west's gateway resetting connections", false, 10*time.Second); took > time.Second+500*time.Millisecond {
		t.Errorf("RST: west left the MCP state after %v, bound 1s (+0.5s margin for this loaded machine)", took)
	}
	if err := west.Fault.Restore(); err != nil {
		t.Fatal(err)
	}
	wait("west's gateway back", true, 30*time.Second)

	west.Fault.Blackhole()
	if took := wait("west's gateway blackholed", false, 15*time.Second); took > 3*time.Second+time.Second {
		t.Errorf("blackhole: west left the MCP state after %v, bound 3s (+1s margin for this loaded machine)", took)
	}
	if err := west.Fault.Restore(); err != nil {
		t.Fatal(err)
	}
	wait("west's gateway back after the blackhole", true, 30*time.Second)
}

// TestIstiodTrust: the other clusters' roots reach east's proxies through istiod, in both
// forms `meshfed istio config` generates (operator.IstioConfig): PEM caCertificates from
// etcd's bundles/, and spiffeBundleUrl pointing at east's own SPIFFE bundle endpoint
// (`meshfed federation --bundle-endpoint`, served here with a certificate istiod trusts
// through SSL_CERT_FILE). Asserted on what the real istiod sends a sidecar that subscribes
// to PCDS as an agent with PROXY_CONFIG_XDS_AGENT=true does: caCertificatesPem holds
// exactly west's and north's roots (this istiod runs no CA of its own), and the mesh
// default the settings carry turns that subscription on.
func TestIstiodTrust(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a federation, kube-apiserver and istiod")
	}
	if istiotest.Binary() == "" {
		t.Skip(istiotest.SkipHint)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	wl, err := harness.StartWorkload("west", "echo-0", harness.WorkloadIP(1, 0)+":0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wl.Close()
	// East's bundle endpoint serves a certificate of a private "Web PKI" CA for its address;
	// istiod is told to trust that CA (SSL_CERT_FILE), as it would trust a public one.
	webCA, certFile, keyFile := webPKI(t, harness.ClusterIP(0))
	f, err := harness.Start(ctx, harness.Options{Trust: true, Clusters: []harness.ClusterSpec{
		{Name: "east", IstioMCP: true, BundleEndpoint: &federate.EndpointConfig{Addr: harness.ClusterIP(0) + ":0", CertFile: certFile, KeyFile: keyFile}},
		{Name: "west", Exports: echoExportsN(wl.Addr)},
		{Name: "north", Region: "region-2"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	east := f.Cluster("east")
	// The roots istiod must hand out: west's and north's development CAs' (not east's own).
	var want []string
	for _, name := range []string{"west", "north"} {
		roots, err := f.Cluster(name).CA.Roots()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range roots {
			want = append(want, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})))
		}
	}
	sort.Strings(want)
	waitfor.Cond(t, 30*time.Second, func() bool { return east.Agent().Istio.Ready() == nil }, "east's MCP source has a plan")
	api := kubetest.Start(t)

	run := func(name string, o operator.IstioConfigOptions, extraEnv map[string]string) {
		t.Helper()
		var settings *istio.Settings
		// Every cluster's bundle published (each federation publishes its own).
		waitfor.Cond(t, 30*time.Second, func() bool {
			s, _, err := operator.IstioConfig(ctx, east.Store, o)
			if err != nil {
				t.Fatal(err)
			}
			settings = s
			return len(s.MeshConfig.GetCaCertificates()) == 2
		}, "%s: west's and north's bundles in etcd", name)
		if v := settings.MeshConfig.GetDefaultConfig().GetProxyMetadata()["PROXY_CONFIG_XDS_AGENT"]; v != "true" {
			t.Fatalf("%s: the settings do not turn the agents' PCDS on (defaultConfig.proxyMetadata %v)", name, settings.MeshConfig.GetDefaultConfig())
		}
		mesh, err := settings.MeshConfigYAML()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s meshConfig:\n%s", name, mesh)
		env := map[string]string{}
		for k, v := range settings.Env {
			env[k] = v
		}
		for k, v := range extraEnv {
			env[k] = v
		}
		ist := istiotest.Start(t, istiotest.Config{APIServer: api, ClusterID: "east", MeshConfig: mesh, Env: env, PodName: "istiod-" + name})
		defer ist.Close()
		sc, err := istiotest.ConnectSidecar(ist.XDSAddr, istiotest.SidecarConfig{
			IP: "10.1.0.5", Pod: "client-0", Namespace: "demo", ClusterID: "east", Network: "net-east",
			Labels: map[string]string{"app": "client"}, ProxyConfig: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sc.Close()
		snap, took, err := sc.WaitFor(60*time.Second, func(s istiotest.Snapshot) bool {
			got := append([]string(nil), s.CACertificatesPEM...)
			sort.Strings(got)
			return strings.Join(got, "") == strings.Join(want, "")
		})
		if err != nil {
			t.Fatalf("%s: PCDS: %v\nistiod sent %d PCDS answers, roots %v\nwant west's and north's %v\nistiod:\n%s", name, err,
				snap.ProxyConfigs, subjects(t, snap.CACertificatesPEM), subjects(t, want), ist.LogTail(30))
		}
		t.Logf("%s: istiod's PCDS carries %v, %v after the sidecar connected", name, subjects(t, snap.CACertificatesPEM), took.Round(time.Millisecond))
	}

	run("pem", operator.IstioConfigOptions{Cluster: "east", MCPAddress: east.IstioMCPAddr}, nil)

	waitfor.Cond(t, 20*time.Second, func() bool { return east.BundleEndpointAddr() != "" }, "east's bundle endpoint listening")
	run("spiffe-bundle-url", operator.IstioConfigOptions{Cluster: "east", MCPAddress: east.IstioMCPAddr, BundleURL: "https://" + east.BundleEndpointAddr()},
		map[string]string{"SSL_CERT_FILE": webCA})
}

// webPKI writes a CA and a serving certificate for ip signed by it (a stand-in for a
// public CA) and returns the CA file, the certificate and the key files.
func webPKI(t *testing.T, ip string) (caFile, certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	ca := testpki.New(t, testpki.Spec{CN: "test web PKI root", CA: true})
	leaf := ca.Issue(t, testpki.Spec{CN: ip, IPs: []net.IP{net.ParseIP(ip)}, EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	testpki.Write(t, caFile, ca.CertPEM())
	testpki.Write(t, certFile, leaf.CertPEM())
	testpki.Write(t, keyFile, leaf.KeyPEM(t))
	return caFile, certFile, keyFile
}

// subjects names PEM certificates by their subject, for messages.
func subjects(t *testing.T, pems []string) []string {
	t.Helper()
	var out []string
	for _, p := range pems {
		b, _ := pem.Decode([]byte(p))
		if b == nil {
			out = append(out, "(not PEM)")
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			out = append(out, "(bad certificate)")
			continue
		}
		out = append(out, c.Subject.String())
	}
	return out
}
