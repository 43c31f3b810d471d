package xds_test

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	grpcxds "google.golang.org/grpc/xds"

	"github.com/meshfed/meshfed/eastwest"
	"github.com/meshfed/meshfed/federation/health"
	"github.com/meshfed/meshfed/federation/service"
	"github.com/meshfed/meshfed/federation/xds"
	"github.com/meshfed/meshfed/internal/testetcd"
	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
)

// percentile of sorted durations.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(float64(len(d)-1) * p)
	return d[i]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// BenchmarkPropagation measures the time from an etcd write of an export change to the
// updated EDS inside a real grpc-go xDS client, with 1000 services exported by each of 5
// clusters (5000 exports, 50k endpoints) in the federation. Each iteration flips one of 20
// probe services (exported by one cluster) from 0 to 1 ready endpoint; the probe's grpc-go
// channel leaves TRANSIENT_FAILURE when its xDS client has the new ClusterLoadAssignment.
// grpc-go opens one xDS client (one ADS stream) per channel target, so the client side is
// the 20 probe channels; the 1000 services load the etcd watch, the import view and the
// planner. The baseline is the same write seen by a plain etcd watch, in the same run.
func BenchmarkPropagation(b *testing.B) {
	const nSvc, nCl, nProbe = 1000, 5, 20
	log := testLogger(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	etcd := testetcd.Start(b)
	cli, err := store.Dial(ctx, store.Config{Endpoints: etcd.Clients, Prefix: records.DefaultPrefix})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	st, err := store.New(cli, records.DefaultPrefix, log)
	if err != nil {
		b.Fatal(err)
	}

	caEast := newTestCA(b, tdEast)
	cas := []*testCA{caEast}
	svcName := func(j int) string { return "svc" + strconv.Itoa(j) }
	probeName := func(k int) string { return "probe" + strconv.Itoa(k) }
	now := time.Now().UTC()
	for c := 1; c <= nCl; c++ {
		cl := fmt.Sprintf("c%d", c)
		ca := newTestCA(b, cl+".meshfed.test")
		cas = append(cas, ca)
		// One gRPC workload behind each cluster's real gateway, answering every service.
		wl := startGRPCWorkload(b, "127.0.0.1:0", ca.svid(b, "/ns/bench/sa/svc"), caEast)
		host, port, _ := net.SplitHostPort(wl.addr)
		p, _ := strconv.Atoi(port)
		routes := &eastwest.RouteTable{Services: map[eastwest.ServiceKey][]eastwest.Endpoint{}}
		for j := 0; j < nSvc; j++ {
			routes.Services[eastwest.ServiceKey{Namespace: "bench", Name: svcName(j), Port: 8443}] = []eastwest.Endpoint{{Address: host, Port: uint32(p), Ready: true}}
		}
		for k := 0; k < nProbe; k++ {
			routes.Services[eastwest.ServiceKey{Namespace: "bench", Name: probeName(k), Port: 8443}] = []eastwest.Endpoint{{Address: host, Port: uint32(p), Ready: true}}
		}
		gw, err := eastwest.New(eastwest.Config{Cluster: cl, Log: log, Registry: prometheus.NewRegistry(), DrainTimeout: time.Second})
		if err != nil {
			b.Fatal(err)
		}
		gw.SetRoutes(routes)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go func() { _ = gw.Serve(ctx, ln) }()
		if _, err := st.Create(ctx, st.KS.Cluster(cl), &records.Cluster{Name: cl, Network: "n", Region: "region-" + strconv.Itoa(c),
			Zone: "z", TrustDomain: ca.td, Gateways: []string{ln.Addr().String()}, JoinedAt: now}); err != nil {
			b.Fatal(err)
		}
		if _, err := st.Create(ctx, st.KS.Alive(cl), &records.Alive{Cluster: cl, Instance: "bench", Since: now, TTL: 3600}); err != nil {
			b.Fatal(err)
		}
		for j := 0; j < nSvc; j++ {
			e := &records.Export{Cluster: cl, Namespace: "bench", Name: svcName(j), Type: records.TypeClusterSetIP,
				Ports: []records.Port{{Name: "grpc", Port: 8443, Protocol: "TCP"}}, Revision: 1, ExportedAt: now, UpdatedAt: now}
			for i := 0; i < 10; i++ {
				e.Endpoints = append(e.Endpoints, records.Endpoint{Address: fmt.Sprintf("10.%d.%d.%d", c, j/250, j%250), Ready: true})
				e.Endpoints[i].Address = fmt.Sprintf("10.%d.%d.%d", c, j%250, i+1)
			}
			if _, err := st.Create(ctx, st.KS.Export(cl, "bench", svcName(j)), e); err != nil {
				b.Fatal(err)
			}
		}
	}
	probeExport := func(k int, ready bool, rev int64) *records.Export {
		return &records.Export{Cluster: "c1", Namespace: "bench", Name: probeName(k), Type: records.TypeClusterSetIP,
			Ports: []records.Port{{Name: "grpc", Port: 8443, Protocol: "TCP"}}, Revision: rev, ExportedAt: now, UpdatedAt: time.Now().UTC(),
			Endpoints: []records.Endpoint{{Address: "10.200.0.1", Ready: ready}}}
	}
	for k := 0; k < nProbe; k++ {
		if _, err := st.Create(ctx, st.KS.Export("c1", "bench", probeName(k)), probeExport(k, false, 1)); err != nil {
			b.Fatal(err)
		}
	}

	// East: federation service, health checker, xDS server (default timings).
	reg := prometheus.NewRegistry()
	fed, err := service.New(service.Config{Cluster: "east", Store: st, Log: log, Registry: reg})
	if err != nil {
		b.Fatal(err)
	}
	hc, err := health.New(health.Options{}, log, reg)
	if err != nil {
		b.Fatal(err)
	}
	feed := xds.NewFeed()
	fed.OnView(feed.Send)
	xs, err := xds.New("east", feed.C(), hc, log, reg, xds.Options{Listen: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	if err := xs.Listen(); err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{fed.Run, hc.Run, xs.Run} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = run(ctx) }()
	}
	defer wg.Wait()
	defer cancel()

	// One grpc-go xDS client (one resolver builder: one xDS client, one ADS stream)
	// subscribed to every service.
	files := writeClientFiles(b, b.TempDir(), caEast.svid(b, "/ns/bench/sa/client"), cas...)
	res, err := grpcxds.NewXDSResolverWithConfigForTesting(grpcBootstrap(xs.Addr(), "bench-client", "east", files))
	if err != nil {
		b.Fatal(err)
	}
	creds, _ := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	dial := func(name string) *grpc.ClientConn {
		cc, err := grpc.NewClient("xds:///"+name+".bench.svc.clusterset.local:8443", grpc.WithResolvers(res), grpc.WithTransportCredentials(creds))
		if err != nil {
			b.Fatal(err)
		}
		cc.Connect()
		return cc
	}
	var conns []*grpc.ClientConn
	defer func() {
		for _, cc := range conns {
			cc.Close()
		}
	}()
	probes := make([]*grpc.ClientConn, nProbe)
	for k := range probes {
		probes[k] = dial(probeName(k))
		conns = append(conns, probes[k])
	}
	waitfor.Cond(b, 120*time.Second, func() bool {
		if xs.Ready() != nil || len(xs.Plans()) < nSvc+nProbe {
			return false
		}
		for _, cc := range probes {
			if cc.GetState() != connectivity.TransientFailure {
				return false
			}
		}
		return true
	}, "every service planned, every probe channel without endpoints")

	// Baseline watcher.
	wch := cli.Watch(ctx, st.KS.ExportsOf("c1")+"bench/probe", clientv3.WithPrefix())
	rev := make([]int64, nProbe)
	for k := range rev {
		rev[k] = 1
	}
	var lat, base []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := i % nProbe
		cc := probes[k]
		rev[k]++
		key := st.KS.Export("c1", "bench", probeName(k))
		start := time.Now()
		if err := putExport(ctx, cli, key, probeExport(k, true, rev[k])); err != nil {
			b.Fatal(err)
		}
		seen := testetcd.WaitKey(b, wch, key)
		base = append(base, seen.Sub(start))
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		for cc.GetState() == connectivity.TransientFailure && cc.WaitForStateChange(wctx, connectivity.TransientFailure) {
		}
		wcancel()
		if cc.GetState() == connectivity.TransientFailure {
			b.Fatalf("probe %d: no endpoints 10s after the write", k)
		}
		lat = append(lat, time.Since(start))

		b.StopTimer()
		// Back to no ready endpoint, and wait until the client has it too.
		rev[k]++
		if err := putExport(ctx, cli, key, probeExport(k, false, rev[k])); err != nil {
			b.Fatal(err)
		}
		testetcd.WaitKey(b, wch, key)
		wctx, wcancel = context.WithTimeout(ctx, 10*time.Second)
		for cc.GetState() != connectivity.TransientFailure && cc.WaitForStateChange(wctx, cc.GetState()) {
		}
		wcancel()
		b.StartTimer()
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	sort.Slice(base, func(i, j int) bool { return base[i] < base[j] })
	b.ReportMetric(ms(percentile(lat, 0.5)), "p50-ms")
	b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
	b.ReportMetric(ms(percentile(base, 0.5)), "etcd-watch-p50-ms")
	b.ReportMetric(ms(percentile(base, 0.99)), "etcd-watch-p99-ms")
	b.ReportMetric(0, "ns/op")
}

func putExport(ctx context.Context, cli *clientv3.Client, key string, e *records.Export) error {
	v, err := records.Encode(e)
	if err != nil {
		return err
	}
	_, err = cli.Put(ctx, key, string(v))
	return err
}
