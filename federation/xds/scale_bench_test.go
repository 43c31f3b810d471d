package xds

import (
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/meshfed/meshfed/federation/health"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/view"
)

var benchT0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// scaleView is nSvc services, each exported by every one of nCl clusters with nEp ready
// endpoints (cluster c00 is the local one).
func scaleView(nSvc, nCl, nEp int) *view.View {
	v := &view.View{Revision: 1, Services: make(map[string]*view.Service, nSvc),
		Clusters: map[string]*records.Cluster{}, Alive: map[string]bool{}}
	for c := 0; c < nCl; c++ {
		name := fmt.Sprintf("c%02d", c)
		v.Clusters[name] = &records.Cluster{Name: name, Network: "n", Region: fmt.Sprintf("r%d", c%3), Zone: "z",
			TrustDomain: name + ".example", Gateways: []string{fmt.Sprintf("10.%d.0.1:15443", c), fmt.Sprintf("10.%d.0.2:15443", c)}, JoinedAt: benchT0}
		v.Alive[name] = true
	}
	for s := 0; s < nSvc; s++ {
		v.Services[fmt.Sprintf("ns%d/svc%d", s%50, s)] = scaleService(s, nCl, nEp, 1)
	}
	return v
}

func scaleService(s, nCl, nEp int, rev int64) *view.Service {
	exps := make([]*view.ClusterExport, 0, nCl)
	for c := 0; c < nCl; c++ {
		e := &records.Export{Cluster: fmt.Sprintf("c%02d", c), Namespace: fmt.Sprintf("ns%d", s%50), Name: fmt.Sprintf("svc%d", s),
			Type: records.TypeClusterSetIP, Ports: []records.Port{{Name: "grpc", Port: 8443, TargetPort: 9443, Protocol: "TCP"}},
			Revision: rev, ExportedAt: benchT0, UpdatedAt: benchT0.Add(time.Duration(rev))}
		e.Endpoints = make([]records.Endpoint, nEp)
		for i := range e.Endpoints {
			e.Endpoints[i] = records.Endpoint{Address: fmt.Sprintf("10.%d.%d.%d", c, (s/200)%250, (s%200)+i%50), Zone: "z", Ready: i != nEp-1 || rev%2 == 1}
		}
		exps = append(exps, &view.ClusterExport{Cluster: e.Cluster, Export: e})
	}
	return view.Merge(exps)
}

func benchServer(tb testing.TB) *Server {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	hc, err := health.New(health.Options{}, log, nil) // not run: every gateway Unknown (usable)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := New("c00", make(chan *view.View), hc, log, nil, Options{})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// cpuTime is the process's user+system CPU time: on a shared machine wall time measures
// the neighbours as much as the code.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkFullRecompute plans every service of a fresh server from one view (what a
// restart or a change of this cluster's region costs) and reports the heap the server
// holds for it (plans, resources, caches; the view itself is not counted).
func BenchmarkFullRecompute(b *testing.B) {
	for _, sz := range []struct{ svc, cl, ep int }{{1000, 10, 10}, {10000, 10, 10}} {
		b.Run(fmt.Sprintf("services=%d/clusters=%d/endpoints=%d", sz.svc, sz.cl, sz.ep), func(b *testing.B) {
			h0 := heapInUse()
			v := scaleView(sz.svc, sz.cl, sz.ep)
			viewMiB := float64(heapInUse()-h0) / (1 << 20)
			var heap float64
			var cpu time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				before := heapInUse()
				s := benchServer(b)
				c0 := cpuTime()
				b.StartTimer()
				s.replan(time.Now(), s.onView(v))
				b.StopTimer()
				cpu += cpuTime() - c0
				heap = float64(heapInUse()-before) / (1 << 20)
				if len(s.svcs) != sz.svc {
					b.Fatalf("planned %d services", len(s.svcs))
				}
				runtime.KeepAlive(s)
				b.StartTimer()
			}
			b.ReportMetric(heap, "server-MiB")
			b.ReportMetric(viewMiB, "view-MiB")
			b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
			runtime.KeepAlive(v)
		})
	}
}

// BenchmarkUpdateOneService changes one endpoint of one service in a big view and
// re-plans: the cost should follow that service, not the number of services. "listed":
// the view says which services changed (view.View.Changed); "unlisted": the server
// compares every service of the view (one map lookup each).
func BenchmarkUpdateOneService(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		for _, listed := range []bool{true, false} {
			name := fmt.Sprintf("services=%d/changes=unlisted", n)
			if listed {
				name = fmt.Sprintf("services=%d/changes=listed", n)
			}
			b.Run(name, func(b *testing.B) {
				v := scaleView(n, 10, 10)
				s := benchServer(b)
				s.replan(time.Now(), s.onView(v))
				// Views as the federation service builds them: unchanged services shared.
				views := make([]*view.View, 2)
				for i := range views {
					nv := *v
					nv.Revision = int64(i + 2)
					nv.Services = make(map[string]*view.Service, len(v.Services))
					for k, sv := range v.Services {
						nv.Services[k] = sv
					}
					nv.Services["ns7/svc7"] = scaleService(7, 10, 10, int64(i+2))
					if listed {
						nv.Changed = []string{"ns7/svc7"}
					}
					views[i] = &nv
				}
				b.ReportAllocs()
				runtime.GC() // the setup's garbage is not the update's cost
				c0 := cpuTime()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					keys := s.onView(views[i%2])
					if len(keys) != 1 {
						b.Fatalf("re-planned %d services for a one-service change", len(keys))
					}
					s.replan(time.Now(), keys)
				}
				b.StopTimer()
				b.ReportMetric(float64((cpuTime()-c0).Microseconds())/float64(b.N), "cpu-us/op")
			})
		}
	}
}

// BenchmarkViewScan is the part of a pass that grows with the number of services: finding
// which services changed in a new view (here: none did).
func BenchmarkViewScan(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			v := scaleView(n, 10, 10)
			s := benchServer(b)
			s.replan(time.Now(), s.onView(v))
			views := make([]*view.View, 2)
			for i := range views {
				nv := *v
				nv.Revision = int64(i + 2)
				views[i] = &nv
			}
			b.ReportAllocs()
			runtime.GC()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if keys := s.onView(views[i%2]); len(keys) != 0 {
					b.Fatalf("%d services changed", len(keys))
				}
			}
		})
	}
}
