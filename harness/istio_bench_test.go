package harness_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/discovery/file"
	"github.com/meshfed/meshfed/eastwest"
	"github.com/meshfed/meshfed/federation/agent"
	"github.com/meshfed/meshfed/federation/istio"
	"github.com/meshfed/meshfed/federation/xds"
	"github.com/meshfed/meshfed/internal/istiotest"
	"github.com/meshfed/meshfed/internal/kubetest"
	"github.com/meshfed/meshfed/internal/testetcd"
	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
)

// BenchmarkIstiodPropagation: an etcd write of an export change → the EDS a sidecar of east
// gets from a real istiod fed by east's federation over MCP, beside the same write → the
// EDS an Envoy-class ADS client gets from east's own xDS server, and → a plain etcd watch
// (the baseline), all in one run. Scale: MESHFED_BENCH_ISTIO_SERVICES services (default
// 1000) exported by MESHFED_BENCH_ISTIO_CLUSTERS clusters (default 5), 10 endpoints each,
// every cluster with a live gateway (health checked); both clients subscribed to every
// service. Each op makes one probe service's c1 endpoints ready (c1 shares east's region,
// so it goes first in the plan, c2 keeps the probe served) and waits for all three
// observers; the way back is untimed. Without the istiod binary only meshfed's own path is
// measured (istiod-* metrics absent) and the benchmark says so.
func BenchmarkIstiodPropagation(b *testing.B) {
	nSvc, nCl := envInt(b, "MESHFED_BENCH_ISTIO_SERVICES", 1000), envInt(b, "MESHFED_BENCH_ISTIO_CLUSTERS", 5)
	const nProbe = 20
	if nCl < 2 {
		b.Fatal("MESHFED_BENCH_ISTIO_CLUSTERS: at least 2 (c1 is toggled, c2 keeps the probes served)")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	etcd := testetcd.Start(b)
	cli, err := store.Dial(ctx, store.Config{Endpoints: etcd.Clients, Prefix: records.DefaultPrefix})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	st, err := store.New(cli, records.DefaultPrefix, nil)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UTC()
	svcName := func(j int) string { return "svc" + strconv.Itoa(j) }
	probeName := func(k int) string { return "probe" + strconv.Itoa(k) }
	export := func(cl, name string, c, j int, ready bool, rev int64) *records.Export {
		e := &records.Export{Cluster: cl, Namespace: "bench", Name: name, Type: records.TypeClusterSetIP,
			Ports: []records.Port{{Name: "grpc", Port: 8443, Protocol: "TCP"}}, Revision: rev, ExportedAt: now, UpdatedAt: time.Now().UTC()}
		for i := 0; i < 10; i++ {
			e.Endpoints = append(e.Endpoints, records.Endpoint{Address: fmt.Sprintf("10.%d.%d.%d", c, j%250, i+1), Ready: ready})
		}
		return e
	}
	gwAddr := map[string]string{}
	for c := 1; c <= nCl; c++ {
		cl := "c" + strconv.Itoa(c)
		// A live gateway per cluster (no routes needed: the health checker's stream is
		// answered by every gateway).
		gw, err := eastwest.New(eastwest.Config{Cluster: cl, Registry: prometheus.NewRegistry(), DrainTimeout: time.Second})
		if err != nil {
			b.Fatal(err)
		}
		gw.SetRoutes(&eastwest.RouteTable{Services: map[eastwest.ServiceKey][]eastwest.Endpoint{}})
		ln, err := gw.Listen(ctx, fmt.Sprintf("127.0.%d.1:0", 100+c))
		if err != nil {
			b.Fatal(err)
		}
		go func() { _ = gw.Serve(ctx, ln) }()
		gwAddr[cl] = ln.Addr().String()
		region := "region-2"
		if c == 1 {
			region = "region-1"
		}
		if _, err := st.Create(ctx, st.KS.Cluster(cl), &records.Cluster{Name: cl, Network: "net-" + cl, Region: region, Zone: region + "-a",
			TrustDomain: cl + ".meshfed.test", Gateways: []string{gwAddr[cl]}, JoinedAt: now}); err != nil {
			b.Fatal(err)
		}
		if _, err := st.Create(ctx, st.KS.Alive(cl), &records.Alive{Cluster: cl, Instance: "bench", Since: now, TTL: 3600}); err != nil {
			b.Fatal(err)
		}
		for j := 0; j < nSvc; j++ {
			if _, err := st.Create(ctx, st.KS.Export(cl, "bench", svcName(j)), export(cl, svcName(j), c, j, true, 1)); err != nil {
				b.Fatal(err)
			}
		}
		for k := 0; k < nProbe && c <= 2; k++ {
			// c2 serves every probe; c1's probe endpoints start not ready.
			if _, err := st.Create(ctx, st.KS.Export(cl, "bench", probeName(k)), export(cl, probeName(k), c, 200+k, c == 2, 1)); err != nil {
				b.Fatal(err)
			}
		}
	}

	// East: one federation process serving its own xDS and istiod's MCP (default timings).
	dir := b.TempDir()
	exports := filepath.Join(dir, "exports.yaml")
	if err := os.WriteFile(exports, []byte("services: []\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	if _, err := st.Create(ctx, st.KS.Cluster("east"), &records.Cluster{Name: "east", Network: "net-east", Region: "region-1", Zone: "region-1-a",
		TrustDomain: "east.meshfed.test", Gateways: []string{"127.0.0.1:15443"}, JoinedAt: now}); err != nil {
		b.Fatal(err)
	}
	ag, err := agent.New(agent.Config{Cluster: "east", Store: st, Source: &file.Source{Cluster: "east", Path: exports, Interval: time.Second},
		XDS: xds.Options{Listen: "127.0.0.1:0"}, IstioMCP: istio.Options{Listen: "127.0.0.1:0"}, Registry: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	agDone := make(chan error, 1)
	go func() { agDone <- ag.Run(ctx) }()
	defer func() { cancel(); <-agDone }()
	probeCluster := func(k int, mesh string) string { return "outbound|8443||" + probeName(k) + ".bench.svc." + mesh }
	waitfor.Cond(b, 5*time.Minute, func() bool {
		return ag.Ready() == nil && ag.Istio.Ready() == nil && len(ag.XDS.Plans()) >= nSvc+nProbe
	}, "east planned every service")

	// meshfed's own xDS: an Envoy-class ADS client (state of the world, CDS then EDS of
	// every cluster).
	own, err := istiotest.ConnectSidecar(ag.XDS.Addr(), istiotest.SidecarConfig{IP: "10.1.0.7", Pod: "envoy-0", Namespace: "bench", ClusterID: "east"})
	if err != nil {
		b.Fatal(err)
	}
	defer own.Close()
	// istiod, fed over MCP, and a sidecar of east in east's region.
	var sc *istiotest.Sidecar
	if istiotest.Binary() == "" {
		b.Logf("no istiod (%s): measuring meshfed's own xDS path and the etcd baseline only", istiotest.EnvIstiod)
	} else {
		api := kubetest.Start(b)
		mesh := fmt.Sprintf("configSources:\n- address: xds://%s\n- address: k8s://\ntrustDomain: east.meshfed.test\n", ag.Istio.Addr())
		ist := istiotest.Start(b, istiotest.Config{APIServer: api, ClusterID: "east", MeshConfig: []byte(mesh)})
		sc, err = istiotest.ConnectSidecar(ist.XDSAddr, istiotest.SidecarConfig{
			IP: "10.1.0.5", Pod: "client-0", Namespace: "bench", ClusterID: "east", Network: "net-east",
			Labels: map[string]string{"app": "client"}, Locality: &corev3.Locality{Region: "region-1", Zone: "region-1-a", SubZone: "east"},
		})
		if err != nil {
			b.Fatal(err)
		}
		defer sc.Close()
	}
	// has: the probe's EDS at a client lists c1's gateway (or, want false, does not) while
	// c2's is there.
	has := func(s istiotest.Snapshot, name string, want bool) bool {
		var c1, c2 bool
		for _, e := range istiotest.Flatten(s.Endpoints[name]) {
			c1 = c1 || e.Address == gwAddr["c1"]
			c2 = c2 || e.Address == gwAddr["c2"]
		}
		return c2 && c1 == want
	}
	everyEDS := func(s istiotest.Snapshot, mesh string) bool {
		n := 0
		for name, cla := range s.Endpoints {
			if strings.HasPrefix(name, "outbound|8443||") && strings.HasSuffix(name, ".bench.svc."+mesh) && len(cla.GetEndpoints()) > 0 {
				n++
			}
		}
		return n >= nSvc+nProbe
	}
	start := time.Now()
	if _, _, err := own.WaitFor(5*time.Minute, func(s istiotest.Snapshot) bool { return everyEDS(s, "clusterset.local") }); err != nil {
		b.Fatalf("meshfed's xDS client: not every service's EDS: %v", err)
	}
	b.Logf("meshfed's xDS client has the EDS of %d services %v after east was ready", nSvc+nProbe, time.Since(start).Round(time.Millisecond))
	if sc != nil {
		if _, _, err := sc.WaitFor(10*time.Minute, func(s istiotest.Snapshot) bool { return everyEDS(s, "cluster.local") }); err != nil {
			b.Fatalf("istiod's sidecar: not every service's EDS: %v (has %d clusters)", err, len(sc.Snapshot().Endpoints))
		}
		b.Logf("istiod's sidecar has the EDS of %d services %v after east was ready", nSvc+nProbe, time.Since(start).Round(time.Millisecond))
	}

	wch := cli.Watch(ctx, st.KS.ExportsOf("c1")+"bench/probe", clientv3.WithPrefix())
	rev := make([]int64, nProbe)
	for k := range rev {
		rev[k] = 1
	}
	var base, ownLat, istLat []time.Duration
	wait := func(c *istiotest.Sidecar, name string, want bool, since time.Time, out *[]time.Duration) chan error {
		done := make(chan error, 1)
		if c == nil {
			done <- nil
			return done
		}
		go func() {
			_, _, err := c.WaitFor(30*time.Second, func(s istiotest.Snapshot) bool { return has(s, name, want) })
			if err == nil && out != nil {
				*out = append(*out, time.Since(since))
			}
			done <- err
		}()
		return done
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := i % nProbe
		key := st.KS.Export("c1", "bench", probeName(k))
		for _, ready := range []bool{true, false} {
			rev[k]++
			v, err := records.Encode(export("c1", probeName(k), 1, 200+k, ready, rev[k]))
			if err != nil {
				b.Fatal(err)
			}
			var timedOwn, timedIst *[]time.Duration
			if ready {
				timedOwn, timedIst = &ownLat, &istLat
			} else {
				b.StopTimer()
			}
			t0 := time.Now()
			ownDone := wait(own, probeCluster(k, "clusterset.local"), ready, t0, timedOwn)
			istDone := wait(sc, probeCluster(k, "cluster.local"), ready, t0, timedIst)
			if _, err := cli.Put(ctx, key, string(v)); err != nil {
				b.Fatal(err)
			}
			seen := testetcd.WaitKey(b, wch, key)
			if ready {
				base = append(base, seen.Sub(t0))
			}
			if err := <-ownDone; err != nil {
				b.Fatalf("probe %d ready=%v: meshfed's xDS client: %v", k, ready, err)
			}
			if err := <-istDone; err != nil {
				b.Fatalf("probe %d ready=%v: istiod's sidecar: %v", k, ready, err)
			}
			if !ready {
				b.StartTimer()
			}
		}
	}
	b.StopTimer()
	report := func(d []time.Duration, name string) {
		if len(d) == 0 {
			return
		}
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		b.ReportMetric(ms(pct(d, 0.5)), name+"-p50-ms")
		b.ReportMetric(ms(pct(d, 0.99)), name+"-p99-ms")
	}
	report(base, "etcd-watch")
	report(ownLat, "meshfed-xds")
	report(istLat, "istiod")
	b.ReportMetric(0, "ns/op")
}

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// pct is the p-quantile of sorted durations (nearest rank).
func pct(d []time.Duration, p float64) time.Duration {
	i := int(float64(len(d))*p+0.999999) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(d) {
		i = len(d) - 1
	}
	return d[i]
}
