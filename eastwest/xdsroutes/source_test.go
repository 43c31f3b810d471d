package xdsroutes_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/eastwest"
	"github.com/meshfed/meshfed/eastwest/xdsroutes"
	"github.com/meshfed/meshfed/internal/metrictest"
	"github.com/meshfed/meshfed/internal/waitfor"
)

var (
	echoName  = inboundName("demo", "echo", 8443)
	otherName = inboundName("demo", "other", 9000)
	echoSNI   = names.ServiceSNI("demo", "echo", 8443)
	otherSNI  = names.ServiceSNI("demo", "other", 9000)
)

const (
	healthy   = corev3.HealthStatus_HEALTHY
	unknown   = corev3.HealthStatus_UNKNOWN
	unhealthy = corev3.HealthStatus_UNHEALTHY
	draining  = corev3.HealthStatus_DRAINING
)

// onlyFrom makes n calls and fails unless every one was answered by want.
func onlyFrom(t *testing.T, g *gateway, sni, want string, n int) {
	t.Helper()
	got := calls(t, g.addr, sni, n)
	if got[want] != n {
		t.Fatalf("calls answered by %v, want all %d by %s (table %s)", got, n, want, routes(g.src.Status().Table))
	}
}

// TestRoutesFromXDS: the gateway takes its table from a real go-control-plane ADS server
// serving the inbound contract; TLS through the gateway reaches the backends; endpoint
// health changes propagate; every ACK carries the version and nonce of its response.
func TestRoutesFromXDS(t *testing.T) {
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	cp := newControlPlane(t)
	cp.setCLA(cla(echoName, ep{addr: b1.addr, zone: "z1", health: healthy, weight: 2}, ep{addr: b2.addr, zone: "z2", health: unknown}))
	cp.setCluster(inboundCluster("demo", "echo", 8443))
	cp.start()

	g := newGateway(t, fastConfig(cp.addr))
	if g.Ready() == nil {
		t.Fatal("gateway ready before any table")
	}
	g.startSource(t, 10*time.Second)
	if err := g.Ready(); err != nil {
		t.Fatalf("gateway not ready after the first table: %v", err)
	}
	want := "demo/echo:8443=" + b1.addr + "(ready,z1,2)," + b2.addr + "(ready,z2,0)"
	if b2.addr < b1.addr {
		want = "demo/echo:8443=" + b2.addr + "(ready,z2,0)," + b1.addr + "(ready,z1,2)"
	}
	if got := routes(g.src.Status().Table); got != want {
		t.Fatalf("table %s, want %s", got, want)
	}
	for who := range calls(t, g.addr, echoSNI, 10) {
		if who != "b1" && who != "b2" {
			t.Fatalf("answered by %q", who)
		}
	}

	// Readiness follows the health status: UNHEALTHY and DRAINING endpoints are not used.
	m := cp.mark()
	cp.setCLA(cla(echoName, ep{addr: b1.addr, zone: "z1", health: unhealthy}, ep{addr: b2.addr, zone: "z2", health: healthy}))
	waitfor.Cond(t, 10*time.Second, func() bool { return cp.answered(m, resourcev3.EndpointType, echoName, true) }, "EDS update ACKed")
	onlyFrom(t, g, echoSNI, "b2", 8)
	m = cp.mark()
	cp.setCLA(cla(echoName, ep{addr: b1.addr, zone: "z1", health: healthy}, ep{addr: b2.addr, zone: "z2", health: draining}))
	waitfor.Cond(t, 10*time.Second, func() bool { return cp.answered(m, resourcev3.EndpointType, echoName, true) }, "EDS update ACKed")
	onlyFrom(t, g, echoSNI, "b1", 8)

	// The node says who it is: the federation classifies the gateway by its metadata.
	reqs := cp.requests()
	n := reqs[0].GetNode()
	if n.GetId() != "east~gateway~gw-0" || n.GetCluster() != "east" || n.GetUserAgentName() != "meshfed-gateway" ||
		n.GetMetadata().GetFields()[names.NodeRoleKey].GetStringValue() != names.NodeRoleGateway {
		t.Fatalf("node %v", n)
	}
	if reqs[0].GetTypeUrl() != resourcev3.ClusterType || len(reqs[0].GetResourceNames()) != 0 || reqs[0].GetVersionInfo() != "" {
		t.Fatalf("first request %v: want a wildcard CDS subscription from no version", reqs[0])
	}
	// Every ACK names the version and nonce of the response it answers, per type.
	cp.mu.Lock()
	byNonce := map[string]sentResponse{}
	for _, r := range cp.resps {
		byNonce[r.nonce] = r
	}
	cp.mu.Unlock()
	acks := 0
	for _, r := range reqs[1:] {
		if r.GetResponseNonce() == "" {
			if r.GetTypeUrl() != resourcev3.EndpointType || len(r.GetResourceNames()) != 1 || r.GetResourceNames()[0] != echoName {
				t.Fatalf("unexpected fresh request %v", r)
			}
			continue
		}
		resp, ok := byNonce[r.GetResponseNonce()]
		if !ok || resp.typeURL != r.GetTypeUrl() || resp.version != r.GetVersionInfo() || r.GetErrorDetail() != nil {
			t.Fatalf("ACK %v does not match its response %+v", r, resp)
		}
		if r.GetTypeUrl() == resourcev3.EndpointType && strings.Join(r.GetResourceNames(), ",") != echoName {
			t.Fatalf("EDS ACK lost the subscription: %v", r.GetResourceNames())
		}
		acks++
	}
	if acks < 4 {
		t.Fatalf("%d ACKs", acks)
	}
	if v := metrictest.Value(t, g.reg, "meshfed_gateway_xds_connected"); v != 1 {
		t.Fatalf("connected = %v", v)
	}
	if v := metrictest.Value(t, g.reg, "meshfed_gateway_xds_updates_total", "type", "eds"); v < 3 {
		t.Fatalf("eds updates = %v", v)
	}
	if v := metrictest.Value(t, g.reg, "meshfed_gateway_xds_nacks_total", "type", "cds"); v != 0 {
		t.Fatalf("nacks = %v", v)
	}
}

// TestFirstTableWaitsForEveryEDS: no half tables. The first table (which makes the
// gateway ready) comes only once CDS and the EDS of every cluster it names have arrived.
func TestFirstTableWaitsForEveryEDS(t *testing.T) {
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	cp := newControlPlane(t)
	cp.setCluster(inboundCluster("demo", "echo", 8443))
	cp.setCluster(inboundCluster("demo", "other", 9000))
	cp.setCLA(cla(echoName, ep{addr: b1.addr, health: healthy}))
	cp.start()
	g := newGateway(t, fastConfig(cp.addr))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan error, 1)
	m := cp.mark()
	go func() { started <- g.StartSource(ctx, g.src) }()

	waitfor.Cond(t, 10*time.Second, func() bool { return cp.answered(m, resourcev3.EndpointType, echoName, true) },
		"echo's EDS ACKed")
	// The answer was sent after the table would have been published: none was.
	if tbl := g.src.Status().Table; tbl != nil || g.Ready() == nil {
		t.Fatalf("a table is in force with other's endpoints missing: %s", routes(tbl))
	}
	select {
	case err := <-started:
		t.Fatalf("StartSource returned before the table was whole: %v", err)
	default:
	}

	cp.setCLA(cla(otherName, ep{addr: b2.addr, health: healthy}))
	select {
	case err := <-started:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no table after the last EDS arrived")
	}
	if tbl := g.src.Status().Table; tbl.Len() != 2 {
		t.Fatalf("table %s", routes(tbl))
	}
	onlyFrom(t, g, echoSNI, "b1", 3)
	onlyFrom(t, g, otherSNI, "b2", 3)
	cancel()
	waitfor.Cond(t, 5*time.Second, func() bool { return !g.src.Status().Connected }, "source stops")
}

// TestInitialFetchTimeout: an EDS that never comes keeps only its own service out of the
// first table; it joins when its endpoints arrive.
func TestInitialFetchTimeout(t *testing.T) {
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	cp := newControlPlane(t)
	cp.setCluster(inboundCluster("demo", "echo", 8443))
	cp.setCluster(inboundCluster("demo", "other", 9000))
	cp.setCLA(cla(echoName, ep{addr: b1.addr, health: healthy}))
	cp.start()
	cfg := fastConfig(cp.addr)
	cfg.InitialFetchTimeout = 200 * time.Millisecond
	g := newGateway(t, cfg)
	g.startSource(t, 10*time.Second)
	if got := routes(g.src.Status().Table); got != "demo/echo:8443="+b1.addr+"(ready,,0)" {
		t.Fatalf("first table %s", got)
	}
	onlyFrom(t, g, echoSNI, "b1", 2)
	if _, err := call(g.addr, otherSNI); err == nil {
		t.Fatal("other routed without endpoints")
	}
	cp.setCLA(cla(otherName, ep{addr: b2.addr, health: healthy}))
	waitfor.Cond(t, 10*time.Second, func() bool { return g.src.Status().Table.Len() == 2 }, "other joins the table")
	onlyFrom(t, g, otherSNI, "b2", 2)
}

// TestNACKKeepsTheTable: a cluster or an assignment the gateway cannot use is refused
// with a NACK carrying the reason and the last accepted version; the table in force stays
// and keeps routing; a good update afterwards is taken.
func TestNACKKeepsTheTable(t *testing.T) {
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	cp := newControlPlane(t)
	cp.setCluster(inboundCluster("demo", "echo", 8443))
	cp.setCLA(cla(echoName, ep{addr: b1.addr, health: healthy}))
	cp.start()
	g := newGateway(t, fastConfig(cp.addr))
	g.startSource(t, 10*time.Second)
	before := g.src.Status()

	// A CDS cluster outside the contract (an outbound name).
	bad := inboundCluster("demo", "echo", 8443)
	bad.Name = names.ClusterName("demo", "echo", 8443)
	m := cp.mark()
	cp.setCluster(bad)
	waitfor.Cond(t, 10*time.Second, func() bool { return cp.answered(m, resourcev3.ClusterType, bad.Name, false) }, "bad CDS NACKed")
	nk := cp.nacks(resourcev3.ClusterType)[0]
	if nk.GetVersionInfo() != before.CDSVersion || !strings.Contains(nk.GetErrorDetail().GetMessage(), bad.Name) ||
		!strings.Contains(nk.GetErrorDetail().GetMessage(), "inbound|") || nk.GetErrorDetail().GetCode() != 3 {
		t.Fatalf("NACK %v: want the last accepted version %q and the reason", nk, before.CDSVersion)
	}
	if st := g.src.Status(); st.Table != before.Table || st.CDSVersion != before.CDSVersion {
		t.Fatalf("table changed after a NACK: %s", routes(st.Table))
	}
	onlyFrom(t, g, echoSNI, "b1", 3)
	if v := metrictest.Value(t, g.reg, "meshfed_gateway_xds_nacks_total", "type", "cds"); v != 1 {
		t.Fatalf("cds nacks = %v", v)
	}
	m = cp.mark()
	cp.delCluster(bad.Name)
	waitfor.Cond(t, 10*time.Second, func() bool { return cp.answered(m, resourcev3.ClusterType, echoName, true) }, "good CDS ACKed")

	// Assignments the gateway cannot dial: a host name, and one that fails Validate().
	m = cp.mark()
	cp.setCLA(cla(echoName, ep{addr: "echo.example:9443", health: healthy}))
	waitfor.Cond(t, 10*time.Second, func() bool { return cp.answered(m, resourcev3.EndpointType, echoName, false) }, "bad EDS NACKed")
	if msg := cp.nacks(resourcev3.EndpointType)[0].GetErrorDetail().GetMessage(); !strings.Contains(msg, "not an IP literal") {
		t.Fatalf("EDS NACK reason %q", msg)
	}
	onlyFrom(t, g, echoSNI, "b1", 3)
	zero := cla(echoName, ep{addr: b2.addr, health: healthy})
	zero.Endpoints[0].LbEndpoints[0].LoadBalancingWeight = wrapperspb.UInt32(0) // must be >= 1
	cp.setCLA(zero)
	waitfor.Cond(t, 10*time.Second, func() bool { return len(cp.nacks(resourcev3.EndpointType)) == 2 }, "invalid EDS NACKed")
	if msg := cp.nacks(resourcev3.EndpointType)[1].GetErrorDetail().GetMessage(); !strings.Contains(msg, "invalid") {
		t.Fatalf("EDS NACK reason %q", msg)
	}
	onlyFrom(t, g, echoSNI, "b1", 3)
	if v := metrictest.Value(t, g.reg, "meshfed_gateway_xds_nacks_total", "type", "eds"); v != 2 {
		t.Fatalf("eds nacks = %v", v)
	}

	// A good update is taken again.
	m = cp.mark()
	cp.setCLA(cla(echoName, ep{addr: b2.addr, health: healthy}))
	waitfor.Cond(t, 10*time.Second, func() bool { return cp.answered(m, resourcev3.EndpointType, echoName, true) }, "good EDS ACKed")
	onlyFrom(t, g, echoSNI, "b2", 3)
}

// TestDomainMismatch: a gateway whose --domain differs from the federation's refuses every
// cluster (NACK naming the flag) and never becomes ready on a wrong table.
func TestDomainMismatch(t *testing.T) {
	b1 := startBackend(t, "b1")
	cp := newControlPlane(t)
	cp.setCluster(inboundCluster("demo", "echo", 8443))
	cp.setCLA(cla(echoName, ep{addr: b1.addr, health: healthy}))
	cp.start()
	cfg := fastConfig(cp.addr)
	cfg.Domain = "corp.example"
	g := newGateway(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	m := cp.mark()
	go func() { done <- g.src.Run(ctx, func(*eastwest.RouteTable) { t.Error("table delivered") }) }()
	waitfor.Cond(t, 10*time.Second, func() bool { return cp.answered(m, resourcev3.ClusterType, echoName, false) }, "CDS NACKed")
	if msg := cp.nacks(resourcev3.ClusterType)[0].GetErrorDetail().GetMessage(); !strings.Contains(msg, "--domain") {
		t.Fatalf("NACK reason %q", msg)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestStaticStability: the federation goes away → the gateway keeps routing with the last
// table, says it is stale, and reconnects with backoff; the federation comes back →
// updates resume.
func TestStaticStability(t *testing.T) {
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	cp := newControlPlane(t)
	cp.setCluster(inboundCluster("demo", "echo", 8443))
	cp.setCLA(cla(echoName, ep{addr: b1.addr, health: healthy}))
	cp.start()
	cfg := fastConfig(cp.addr)
	cfg.StaleLogInterval = 20 * time.Millisecond
	g := newGateway(t, cfg)
	g.startSource(t, 10*time.Second)
	onlyFrom(t, g, echoSNI, "b1", 2)

	down := time.Now()
	cp.stop()
	waitfor.Cond(t, 10*time.Second, func() bool { return !g.src.Status().Connected }, "source sees the federation gone")
	st := g.src.Status()
	if st.StaleSince.Before(down) || st.Table == nil {
		t.Fatalf("status %+v", st)
	}
	if metrictest.Value(t, g.reg, "meshfed_gateway_xds_connected") != 0 {
		t.Fatal("connected gauge still 1")
	}
	waitfor.Cond(t, 10*time.Second, func() bool { return metrictest.Value(t, g.reg, "meshfed_gateway_xds_disconnects_total") >= 3 },
		"reconnect attempts while the federation is down")
	if metrictest.Value(t, g.reg, "meshfed_gateway_xds_stale_seconds") <= 0 {
		t.Fatal("stale_seconds not counting")
	}
	if err := g.Ready(); err != nil {
		t.Fatalf("gateway unready while the federation is down: %v", err)
	}
	onlyFrom(t, g, echoSNI, "b1", 5) // static stability: the last table keeps routing
	// The watchdog says so, with the time the table went stale.
	waitfor.Cond(t, 10*time.Second, func() bool {
		l := g.logs.String()
		return strings.Contains(l, "routing with the last good table") && strings.Contains(l, "stale_since=")
	}, "watchdog log")

	// While it is down its data changes; the gateway learns it when it returns.
	cp.setCLA(cla(echoName, ep{addr: b2.addr, health: healthy}))
	m := cp.mark()
	cp.start()
	waitfor.Cond(t, 10*time.Second, func() bool { return g.src.Status().Connected }, "reconnected")
	waitfor.Cond(t, 10*time.Second, func() bool { return cp.answered(m, resourcev3.EndpointType, echoName, true) }, "EDS after reconnect")
	onlyFrom(t, g, echoSNI, "b2", 3)
	if metrictest.Value(t, g.reg, "meshfed_gateway_xds_stale_seconds") != 0 || metrictest.Value(t, g.reg, "meshfed_gateway_xds_connected") != 1 {
		t.Fatal("stale after reconnect")
	}
}

// TestStartsBeforeTheFederation: a gateway started while its federation is down waits
// (unready, retrying) and serves as soon as the federation answers.
func TestStartsBeforeTheFederation(t *testing.T) {
	b1 := startBackend(t, "b1")
	cp := newControlPlane(t)
	cp.setCluster(inboundCluster("demo", "echo", 8443))
	cp.setCLA(cla(echoName, ep{addr: b1.addr, health: healthy}))
	cp.start() // pick the address...
	cp.stop()  // ...and go away
	g := newGateway(t, fastConfig(cp.addr))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan error, 1)
	go func() { started <- g.StartSource(ctx, g.src) }()
	waitfor.Cond(t, 10*time.Second, func() bool { return metrictest.Value(t, g.reg, "meshfed_gateway_xds_disconnects_total") >= 2 }, "retries")
	if g.Ready() == nil {
		t.Fatal("ready without a table")
	}
	cp.start()
	select {
	case err := <-started:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no table after the federation came up")
	}
	onlyFrom(t, g, echoSNI, "b1", 2)
	cancel()
	waitfor.Cond(t, 5*time.Second, func() bool { return !g.src.Status().Connected }, "source stops")
}

// TestServicesComeAndGo: a cluster gone from CDS is unrouted at once (CDS is full state);
// a new cluster is routed once its endpoints arrive; an empty CDS empties the table.
func TestServicesComeAndGo(t *testing.T) {
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	cp := newControlPlane(t)
	cp.setAll([]*clusterv3.Cluster{inboundCluster("demo", "echo", 8443), inboundCluster("demo", "other", 9000)},
		[]*endpointv3.ClusterLoadAssignment{cla(echoName, ep{addr: b1.addr}), cla(otherName, ep{addr: b2.addr})})
	cp.start()
	g := newGateway(t, fastConfig(cp.addr))
	g.startSource(t, 10*time.Second)
	onlyFrom(t, g, otherSNI, "b2", 2)

	cp.delCluster(otherName)
	waitfor.Cond(t, 10*time.Second, func() bool { return g.src.Status().Table.Len() == 1 }, "other unrouted")
	if _, err := call(g.addr, otherSNI); err == nil {
		t.Fatal("an unexported service is still routed")
	}
	onlyFrom(t, g, echoSNI, "b1", 2)

	third := inboundCluster("demo", "third", 7000)
	m := cp.mark()
	cp.setCluster(third)
	waitfor.Cond(t, 10*time.Second, func() bool { return cp.answered(m, resourcev3.ClusterType, third.Name, true) }, "third's CDS ACKed")
	if g.src.Status().Table.Len() != 1 {
		t.Fatalf("third routed before its endpoints came: %s", routes(g.src.Status().Table))
	}
	cp.setCLA(cla(third.Name, ep{addr: b2.addr}))
	waitfor.Cond(t, 10*time.Second, func() bool { return g.src.Status().Table.Len() == 2 }, "third routed")
	onlyFrom(t, g, names.ServiceSNI("demo", "third", 7000), "b2", 2)

	cp.setAll(nil, nil)
	waitfor.Cond(t, 10*time.Second, func() bool { return g.src.Status().Table.Len() == 0 }, "empty CDS empties the table")
	if _, err := call(g.addr, echoSNI); err == nil {
		t.Fatal("routed with an empty table")
	}
}

// TestEmptyFederation: a cluster that exports nothing still gets a (empty) first table,
// so its gateway becomes ready.
func TestEmptyFederation(t *testing.T) {
	cp := newControlPlane(t)
	cp.start()
	g := newGateway(t, fastConfig(cp.addr))
	g.startSource(t, 10*time.Second)
	if g.src.Status().Table.Len() != 0 || g.Ready() != nil {
		t.Fatalf("status %+v ready %v", g.src.Status(), g.Ready())
	}
}

// TestSnapshotCache: the same client against go-control-plane's snapshot cache (every EDS
// answer carries all requested assignments; per-node snapshots by node id).
func TestSnapshotCache(t *testing.T) {
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	sc := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	set := func(version string, addr string) {
		snap, err := cachev3.NewSnapshot(version, map[resourcev3.Type][]types.Resource{
			resourcev3.ClusterType:  {inboundCluster("demo", "echo", 8443)},
			resourcev3.EndpointType: {cla(echoName, ep{addr: addr, health: healthy})},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := snap.Consistent(); err != nil {
			t.Fatal(err)
		}
		if err := sc.SetSnapshot(context.Background(), "east~gateway~gw-0", snap); err != nil {
			t.Fatal(err)
		}
	}
	set("v1", b1.addr)
	cp := snapshotControlPlane(t, sc)
	cp.start()
	g := newGateway(t, fastConfig(cp.addr))
	g.startSource(t, 10*time.Second)
	onlyFrom(t, g, echoSNI, "b1", 2)
	set("v2", b2.addr)
	waitfor.Cond(t, 10*time.Second, func() bool { return g.src.Status().EDSVersion == "v2" }, "v2 taken")
	onlyFrom(t, g, echoSNI, "b2", 2)
}

func TestConfigErrorsNameTheField(t *testing.T) {
	_, err := xdsroutes.New(xdsroutes.Config{Address: "nowhere", Cluster: "East"})
	if err == nil || !strings.Contains(err.Error(), "address") || !strings.Contains(err.Error(), "cluster") {
		t.Fatalf("error %v", err)
	}
}

// TestCacheAcrossRestart: with a cache file, a gateway restarted while its federation is
// down starts routing at once with the last good table, and takes the federation's table
// when it answers. A cache of another cluster, a stale one, or a broken one is refused.
func TestCacheAcrossRestart(t *testing.T) {
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	cp := newControlPlane(t)
	cp.setCluster(inboundCluster("demo", "echo", 8443))
	cp.setCLA(cla(echoName, ep{addr: b1.addr, health: healthy, zone: "z1", weight: 3}))
	cp.start()
	cache := filepath.Join(t.TempDir(), "routes.json")
	cfg := fastConfig(cp.addr)
	cfg.CacheFile = cache
	g1 := newGateway(t, cfg)
	g1.startSource(t, 10*time.Second)
	onlyFrom(t, g1, echoSNI, "b1", 2)
	waitfor.Cond(t, 5*time.Second, func() bool { _, err := os.Stat(cache); return err == nil }, "cache written")
	first := routes(g1.src.Status().Table)

	// The federation goes away, then the gateway restarts.
	cp.stop()
	g1.cancel()
	g2 := newGateway(t, cfg)
	g2.startSource(t, 5*time.Second)
	st := g2.src.Status()
	if st.Connected || !strings.HasPrefix(st.Table.Origin, "cache ") || routes(st.Table) != first {
		t.Fatalf("restart from cache: connected %v, origin %q, table %s (want %s)", st.Connected, st.Table.Origin, routes(st.Table), first)
	}
	onlyFrom(t, g2, echoSNI, "b1", 3)

	// The federation answers with something new: it replaces the cached table.
	cp.setCLA(cla(echoName, ep{addr: b2.addr, health: healthy}))
	cp.start()
	waitfor.Cond(t, 10*time.Second, func() bool { return strings.HasPrefix(g2.src.Status().Table.Origin, "xds ") }, "xDS table replaces the cache")
	onlyFrom(t, g2, echoSNI, "b2", 3)

	// Refused caches: another cluster's, too old, broken. The gateway waits for the
	// federation instead (it is down again).
	cp.stop()
	for name, mutate := range map[string]func(cfg *xdsroutes.Config){
		"other cluster": func(c *xdsroutes.Config) { c.Cluster = "west" },
		"too old":       func(c *xdsroutes.Config) { c.CacheMaxAge = time.Nanosecond },
		"broken": func(c *xdsroutes.Config) {
			bad := filepath.Join(t.TempDir(), "bad.json")
			os.WriteFile(bad, []byte(`{"version":1,"cluster":"east"`), 0o600)
			c.CacheFile = bad
		},
	} {
		c := cfg
		mutate(&c)
		g := newGateway(t, c)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- g.src.Run(ctx, func(tb *eastwest.RouteTable) { t.Errorf("%s: table delivered from %s", name, tb.Origin) })
		}()
		waitfor.Cond(t, 5*time.Second, func() bool { return strings.Contains(g.logs.String(), "waiting for the federation") },
			"%s: cache refused", name)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// TestClusterComesBack: every cluster leaves the CDS, then one comes back with endpoints
// that did not change meanwhile: the server does not send them again (the subscription
// stayed, as an empty EDS request would be a wildcard), and the gateway routes it again.
func TestClusterComesBack(t *testing.T) {
	b1 := startBackend(t, "b1")
	cp := newControlPlane(t)
	cp.setCluster(inboundCluster("demo", "echo", 8443))
	cp.setCLA(cla(echoName, ep{addr: b1.addr, health: healthy}))
	cp.start()
	g := newGateway(t, fastConfig(cp.addr))
	g.startSource(t, 10*time.Second)
	cp.delCluster(echoName)
	waitfor.Cond(t, 10*time.Second, func() bool { return g.src.Status().Table.Len() == 0 }, "echo unrouted")
	cp.setCluster(inboundCluster("demo", "echo", 8443))
	waitfor.Cond(t, 10*time.Second, func() bool { return g.src.Status().Table.Len() == 1 }, "echo routed again")
	onlyFrom(t, g, echoSNI, "b1", 2)
}
