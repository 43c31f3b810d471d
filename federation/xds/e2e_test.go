package xds_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/federation/health"
	"github.com/meshfed/meshfed/federation/xds"
	"github.com/meshfed/meshfed/harness"
	"github.com/meshfed/meshfed/internal/metrictest"
	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
)

// failoverEnv is the end-to-end setup on the harness: three simulated clusters
// (east and west in region-1, north in region-2), each with its embedded-etcd-backed
// federation service and its real east-west gateway; west and north export demo/echo
// (a gRPC server with TLS); east runs the xDS server and a real grpc-go xDS client. West's
// gateway is reached through a fault proxy so the tests can kill (RST) or blackhole it.
type failoverEnv struct {
	f                 *harness.Federation
	east, west, north *harness.Cluster
	proxy             *faultProxy
	hc                *health.Checker
	xs                *xds.Server
	reg               *prometheus.Registry
	client            *xdsClient
	cancel            context.CancelFunc
	callTimeout       time.Duration // per call while waiting (default 300ms)
}

const (
	tdEast  = "east.meshfed.test"
	tdWest  = "west.meshfed.test"
	tdNorth = "north.meshfed.test"
	target  = "xds:///echo.demo.svc.clusterset.local:8443"
)

func exportsOf(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	return fmt.Sprintf(`services:
  - name: echo
    namespace: demo
    ports: [{name: grpc, port: 8443, targetPort: %s, appProtocol: grpc}]
    endpoints: [{address: %s}]
`, port, host)
}

func startFailoverEnv(t testing.TB, hopts health.Options, minReassign time.Duration) *failoverEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := testLogger(t)
	cas := map[string]*testCA{tdEast: newTestCA(t, tdEast), tdWest: newTestCA(t, tdWest), tdNorth: newTestCA(t, tdNorth)}
	all := []*testCA{cas[tdEast], cas[tdWest], cas[tdNorth]}
	westWL := startGRPCWorkload(t, harness.WorkloadIP(1, 0)+":0", cas[tdWest].svid(t, "/ns/demo/sa/echo"), all...)
	northWL := startGRPCWorkload(t, harness.WorkloadIP(2, 0)+":0", cas[tdNorth].svid(t, "/ns/demo/sa/echo"), all...)

	f, err := harness.Start(ctx, harness.Options{Log: log, Clusters: []harness.ClusterSpec{
		{Name: "east", Region: "region-1"},
		{Name: "west", Region: "region-1", Exports: exportsOf(westWL.addr)},
		{Name: "north", Region: "region-2", Exports: exportsOf(northWL.addr)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	e := &failoverEnv{f: f, east: f.Cluster("east"), west: f.Cluster("west"), north: f.Cluster("north")}

	// West's gateway behind the fault proxy: its cluster record lists the proxy.
	e.proxy = newFaultProxy(t, harness.ClusterIP(1)+":0", e.west.GatewayAddr)
	if _, err := store.Modify[records.Cluster](ctx, e.west.Store, e.west.Store.KS.Cluster("west"), func(cur *records.Cluster) (*records.Cluster, error) {
		n := *cur
		n.Gateways = []string{e.proxy.Addr()}
		return &n, nil
	}); err != nil {
		t.Fatal(err)
	}
	eastFed := e.east.Federation()
	waitfor.Cond(t, 20*time.Second, func() bool {
		v := eastFed.View()
		s := v.Services["demo/echo"]
		w := v.Clusters["west"]
		return s != nil && s.Exporter("west") != nil && s.Exporter("north") != nil && w != nil && w.Gateways[0] == e.proxy.Addr()
	}, "east imports demo/echo from west and north, and sees west's proxy")

	// East's xDS server, wired the way cmd/meshfed does it.
	e.reg = prometheus.NewRegistry()
	e.hc, err = health.New(hopts, log, e.reg)
	if err != nil {
		t.Fatal(err)
	}
	feed := xds.NewFeed()
	eastFed.OnView(feed.Send)
	feed.Send(eastFed.View())
	e.xs, err = xds.New("east", feed.C(), e.hc, log, e.reg, xds.Options{Listen: "127.0.0.1:0", MinReassign: minReassign})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.xs.Listen(); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	e.cancel = rcancel
	hdone, xdone := make(chan struct{}), make(chan struct{})
	go func() { _ = e.hc.Run(rctx); close(hdone) }()
	go func() {
		if err := e.xs.Run(rctx); err != nil {
			t.Errorf("xds run: %v", err)
		}
		close(xdone)
	}()
	t.Cleanup(func() { rcancel(); <-hdone; <-xdone })

	files := writeClientFiles(t, t.TempDir(), cas[tdEast].svid(t, "/ns/demo/sa/client"), all...)
	e.client = newXDSClient(t, grpcBootstrap(e.xs.Addr(), "east-client-1", "east", files), target)
	return e
}

// waitServedBy calls until a call is answered by trust domain td; it returns that call
// and how many calls failed or went elsewhere on the way.
func (e *failoverEnv) waitServedBy(t testing.TB, td string, within time.Duration) (callResult, int) {
	t.Helper()
	deadline := time.Now().Add(within)
	misses := 0
	var last callResult
	for time.Now().Before(deadline) {
		ct := e.callTimeout
		if ct == 0 {
			ct = 300 * time.Millisecond
		}
		last = e.client.call(ct)
		if last.Err == nil && last.TrustDomain == td {
			return last, misses
		}
		misses++
		if last.Err != nil {
			time.Sleep(10 * time.Millisecond) // pace retries of failing calls (not a synchronisation)
		}
	}
	t.Fatalf("not served by %s within %v; last call: %+v (plans %+v)", td, within, last, e.xs.Plans()["demo/echo"])
	return last, misses
}

// TestFailoverEndToEnd is the scenario with real clients: traffic goes to the
// nearest healthy cluster through its gateway with TLS end to end; an RST kill and a
// blackhole of that gateway move it to the other cluster; restoring brings it back after
// the hysteresis; losing west's federation service changes nothing while its gateway is
// healthy. Timings are logged, not asserted (see the xDS benchmarks).
func TestFailoverEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	const minReassign = 1500 * time.Millisecond
	e := startFailoverEnv(t, health.Options{Interval: 200 * time.Millisecond, Timeout: 150 * time.Millisecond}, minReassign)

	// 1. Nearest healthy cluster: west (same region as east), through its gateway, with the
	// workload's own certificate (TLS end to end, nothing terminated in between).
	r, _ := e.waitServedBy(t, tdWest, 30*time.Second)
	if r.SPIFFEID != "spiffe://"+tdWest+"/ns/demo/sa/echo" || r.Peer != e.proxy.Addr() {
		t.Fatalf("first call: %+v; want the west workload's SVID through %s", r, e.proxy.Addr())
	}
	waitfor.Cond(t, 10*time.Second, func() bool {
		p := e.xs.Plans()["demo/echo"]
		return len(p.Ports) == 1 && len(p.Ports[0].Levels) == 2 &&
			p.Ports[0].Levels[0].Cluster == "west" && p.Ports[0].Levels[1].Cluster == "north"
	}, "plan west then north: %+v", e.xs.Plans()["demo/echo"])

	// 2. Kill west's gateway with RST: calls move to north.
	start := time.Now()
	e.proxy.kill()
	r, misses := e.waitServedBy(t, tdNorth, 10*time.Second)
	t.Logf("RST kill: traffic on north after %v (%d calls failed or went to west on the way)", time.Since(start), misses)
	if r.Peer != e.north.GatewayAddr {
		t.Fatalf("north call not through north's gateway: %+v", r)
	}
	waitfor.Cond(t, 5*time.Second, func() bool { return e.hc.State("west", e.proxy.Addr()) == health.HardDown },
		"west's gateway hard-down after the RST kill (state %v)", e.hc.State("west", e.proxy.Addr()))

	// 3. Restore: traffic returns to west only after the hysteresis (2 good checks, and
	// the one-reassignment-per-interval rule).
	restored := time.Now()
	e.proxy.restore(t)
	e.waitServedBy(t, tdWest, 15*time.Second)
	back := time.Since(restored)
	t.Logf("restore after RST: traffic back on west after %v", back)
	if back < 2*200*time.Millisecond-50*time.Millisecond {
		t.Fatalf("traffic returned after %v: faster than two health checks", back)
	}

	// 4. Blackhole west's gateway: connections stall, new ones never complete.
	start = time.Now()
	e.proxy.blackhole()
	_, misses = e.waitServedBy(t, tdNorth, 10*time.Second)
	t.Logf("blackhole: traffic on north after %v (%d calls failed on the way)", time.Since(start), misses)
	if st := e.hc.State("west", e.proxy.Addr()); st != health.Down {
		t.Fatalf("west's gateway is %v after a blackhole, want down (by failed checks)", st)
	}
	e.proxy.restore(t)
	e.waitServedBy(t, tdWest, 15*time.Second)

	// 5. Stop west's federation service: its heartbeat expires and east marks it stale,
	// but its gateway is healthy: nothing changes, not even an EDS push.
	edsBefore := metrictest.Sum(t, e.reg, "meshfed_xds_resource_updates_total", "cache", "any/eds")
	if err := e.west.StopFederation(); err != nil {
		t.Fatal(err)
	}
	eastFed := e.east.Federation()
	waitfor.Cond(t, 20*time.Second, func() bool {
		s := eastFed.View().Services["demo/echo"]
		return s != nil && s.Exporter("west") != nil && s.Exporter("west").Stale
	}, "east marks west stale")
	waitfor.Cond(t, 5*time.Second, func() bool {
		p := e.xs.Plans()["demo/echo"]
		return len(p.Ports) == 1 && len(p.Ports[0].Levels) > 0 && p.Ports[0].Levels[0].Stale
	}, "the served plan records west as stale")
	for i := 0; i < 20; i++ {
		if r := e.client.call(time.Second); r.Err != nil || r.TrustDomain != tdWest {
			t.Fatalf("call %d after west's federation stopped: %+v", i, r)
		}
	}
	if after := metrictest.Sum(t, e.reg, "meshfed_xds_resource_updates_total", "cache", "any/eds"); after != edsBefore {
		t.Fatalf("EDS updates went from %v to %v while only west's heartbeat changed", edsBefore, after)
	}
	if n := metrictest.Sum(t, e.reg, "meshfed_xds_nacks_total"); n != 0 {
		t.Fatalf("%v NACKs from the grpc-go client", n)
	}
	_ = names.HealthSNI
}
