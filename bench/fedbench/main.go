package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/harness"
	"github.com/meshfed/meshfed/keyspace/embedetcd"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/keyspace/view"
)

func main() {
	mode := flag.String("mode", "propagation", "propagation or memory")
	clusters := flag.Int("clusters", 0, "clusters (default 5 for propagation, 10 for memory)")
	services := flag.Int("services", 0, "services per cluster (default 1000 for propagation, 10000 for memory)")
	endpoints := flag.Int("endpoints", 0, "endpoints per service (default 3 for propagation, 10 for memory)")
	samples := flag.Int("samples", 200, "changes measured (propagation)")
	bin := flag.String("meshfed", "bin/meshfed", "meshfed binary (memory)")
	flag.Parse()
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	var err error
	switch *mode {
	case "propagation":
		err = propagation(ctx, def(*clusters, 5), def(*services, 1000), def(*endpoints, 3), *samples)
	case "memory":
		err = memory(ctx, *bin, def(*clusters, 10), def(*services, 10000), def(*endpoints, 10))
	default:
		err = fmt.Errorf("-mode %q: use propagation or memory", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fedbench:", err)
		os.Exit(1)
	}
}

func def(v, d int) int {
	if v == 0 {
		return d
	}
	return v
}

func exportsYAML(cluster, services, endpoints, notReadySvc, notReadyCount int) string {
	var b strings.Builder
	b.WriteString("services:\n")
	for s := 0; s < services; s++ {
		fmt.Fprintf(&b, "  - name: svc-%d\n    namespace: bench\n    ports: [{name: tls, port: 8443}]\n    endpoints:\n", s)
		for e := 0; e < endpoints; e++ {
			ready := !(s == notReadySvc && e < notReadyCount)
			fmt.Fprintf(&b, "      - {address: 10.%d.%d.%d, ready: %v}\n", cluster, e, s%250, ready)
		}
	}
	return b.String()
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1) * p)
	return s[i]
}

// watcher reports the time an observer cluster's view first shows a wanted state.
type watcher struct {
	mu   sync.Mutex
	want func(*view.View) bool
	hit  chan time.Time
}

func (w *watcher) onView(v *view.View) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.want != nil && w.want(v) {
		w.want = nil
		w.hit <- time.Now()
	}
}

func (w *watcher) expect(f func(*view.View) bool) {
	w.mu.Lock()
	w.want = f
	w.mu.Unlock()
}

func propagation(ctx context.Context, nc, ns, ne, samples int) error {
	var specs []harness.ClusterSpec
	for c := 0; c < nc; c++ {
		specs = append(specs, harness.ClusterSpec{Name: fmt.Sprintf("c%d", c), Exports: exportsYAML(c, ns, ne, -1, 0), NoGateway: true})
	}
	fmt.Printf("propagation: %d clusters x %d services x %d endpoints, %d samples per path\n", nc, ns, ne, samples)
	start := time.Now()
	f, err := harness.Start(ctx, harness.Options{Clusters: specs, PollInterval: 50 * time.Millisecond, HeartbeatTTL: 10 * time.Second})
	if err != nil {
		return err
	}
	defer f.Close()
	obs := f.Clusters[0].Federation()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		v := obs.View()
		n := 0
		for _, s := range v.Services {
			n += len(s.Clusters)
		}
		if n == nc*ns {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("initial sync: %d of %d exports after 5m", n, nc*ns)
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Printf("initial publish + sync of %d exports: %v\n", nc*ns, time.Since(start).Round(time.Millisecond))
	w := &watcher{hit: make(chan time.Time, 1)}
	obs.OnView(w.onView) // registered after Run: OnView is safe to call any time

	rng := rand.New(rand.NewSource(1))
	cli := f.Clusters[0].Client
	// Floor: a raw etcd put seen by a raw watch, same etcd, same moment.
	floor := make([]time.Duration, 0, samples)
	wch := cli.Watch(ctx, "/floor/", clientv3.WithPrefix())
	for i := 0; i < samples; i++ {
		t0 := time.Now()
		if _, err := cli.Put(ctx, "/floor/k", strconv.Itoa(i)); err != nil {
			return err
		}
		<-wch
		floor = append(floor, time.Since(t0))
	}
	// Path 1: a direct etcd write of an export record (what the publisher does).
	direct := make([]time.Duration, 0, samples)
	for i := 0; i < samples; i++ {
		c := f.Clusters[1+rng.Intn(nc-1)]
		svc := fmt.Sprintf("svc-%d", rng.Intn(ns))
		key := c.Store.KS.Export(c.Spec.Name, "bench", svc)
		it, err := store.Get[records.Export](ctx, c.Store, key)
		if err != nil {
			return err
		}
		rec := *it.Value
		rec.Endpoints = append([]records.Endpoint(nil), rec.Endpoints...)
		rec.Endpoints[0].Ready = !rec.Endpoints[0].Ready
		rec.Revision++
		want := rec.ReadyEndpoints()
		name := c.Spec.Name
		w.expect(func(v *view.View) bool {
			s := v.Services["bench/"+svc]
			e := s.Exporter(name)
			return e != nil && e.Export.Revision == rec.Revision && e.ReadyEndpoints() == want
		})
		t0 := time.Now()
		if _, err := c.Store.Update(ctx, key, &rec, it.ModRevision); err != nil {
			return err
		}
		select {
		case t1 := <-w.hit:
			direct = append(direct, t1.Sub(t0))
		case <-time.After(10 * time.Second):
			return fmt.Errorf("direct write %s/%s not seen in 10s", name, svc)
		}
	}
	// Put the records back as the files say, so the file path starts from a clean state.
	// (Each sample below rewrites the whole file anyway.)
	// Path 2: an exports file edit (poll interval 50ms) in another cluster.
	fileLat := make([]time.Duration, 0, samples/4)
	for i := 0; i < samples/4; i++ {
		ci := 1 + rng.Intn(nc-1)
		c := f.Clusters[ci]
		si := rng.Intn(ns)
		notReady := 1 + i%2 // alternate so every edit changes the content
		svc := fmt.Sprintf("svc-%d", si)
		name := c.Spec.Name
		want := ne - notReady
		w.expect(func(v *view.View) bool {
			e := v.Services["bench/"+svc].Exporter(name)
			return e != nil && e.ReadyEndpoints() == want
		})
		t0 := time.Now()
		if err := c.SetExports(exportsYAML(ci, ns, ne, si, notReady)); err != nil {
			return err
		}
		select {
		case t1 := <-w.hit:
			fileLat = append(fileLat, t1.Sub(t0))
		case <-time.After(20 * time.Second):
			return fmt.Errorf("file edit %s/%s not seen in 20s", name, svc)
		}
		// Restore this cluster's file so the next edit of it starts from all-ready.
		if err := c.SetExports(exportsYAML(ci, ns, ne, -1, 0)); err != nil {
			return err
		}
		w.expect(func(v *view.View) bool {
			e := v.Services["bench/"+svc].Exporter(name)
			return e != nil && e.ReadyEndpoints() == ne
		})
		select {
		case <-w.hit:
		case <-time.After(20 * time.Second):
			return fmt.Errorf("file restore %s/%s not seen in 20s", name, svc)
		}
	}
	fp50, fp99 := percentile(floor, .5), percentile(floor, .99)
	fmt.Println()
	fmt.Println("| path | p50 | p99 | p50 vs floor | p99 vs floor |")
	fmt.Println("|---|---|---|---|---|")
	row := func(name string, d []time.Duration) {
		p50, p99 := percentile(d, .5), percentile(d, .99)
		fmt.Printf("| %s | %v | %v | %.1fx | %.1fx |\n", name, p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond),
			float64(p50)/float64(fp50), float64(p99)/float64(fp99))
	}
	row("floor: raw etcd put -> raw watch event", floor)
	row("export record write -> remote import view", direct)
	row("exports file edit (50ms poll) -> remote import view", fileLat)
	return nil
}

func memory(ctx context.Context, bin string, nc, ns, ne int) error {
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%s: %w (run make build)", bin, err)
	}
	dir, err := os.MkdirTemp("", "fedbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := embedetcd.Start(ctx, embedetcd.Config{ClientAddr: "127.0.0.1:0", DataDir: filepath.Join(dir, "etcd"), NoFsync: true, LogLevel: "fatal"})
	if err != nil {
		return err
	}
	defer srv.Close()
	cli, err := store.Dial(ctx, store.Config{Endpoints: srv.Clients, Prefix: records.DefaultPrefix})
	if err != nil {
		return err
	}
	defer cli.Close()
	fmt.Printf("memory: one meshfed federation process, %d clusters x %d services x %d endpoints\n", nc, ns, ne)
	base, err := measureFederation(ctx, bin, srv.Clients[0], 0)
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	t0 := time.Now()
	ks := records.MustKeyspace(records.DefaultPrefix)
	now := time.Now().UTC()
	for c := 0; c < nc; c++ {
		cluster := fmt.Sprintf("c%d", c)
		var ops []clientv3.Op
		flush := func() error {
			if len(ops) == 0 {
				return nil
			}
			_, err := cli.Txn(ctx).Then(ops...).Commit()
			ops = ops[:0]
			return err
		}
		for s := 0; s < ns; s++ {
			e := &records.Export{Cluster: cluster, Namespace: "bench", Name: fmt.Sprintf("svc-%d", s), Type: records.TypeClusterSetIP,
				Ports: []records.Port{{Name: "tls", Port: 8443, Protocol: "TCP"}}, Revision: 1, ExportedAt: now, UpdatedAt: now}
			for i := 0; i < ne; i++ {
				e.Endpoints = append(e.Endpoints, records.Endpoint{Address: fmt.Sprintf("10.%d.%d.%d", c, i, s%250), Zone: "z1", Ready: true})
			}
			b, err := records.Encode(e)
			if err != nil {
				return err
			}
			ops = append(ops, clientv3.OpPut(ks.Export(cluster, "bench", e.Name), string(b)))
			if len(ops) == 100 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if err := flush(); err != nil {
			return err
		}
	}
	fmt.Printf("preloaded %d export records in %v\n", nc*ns, time.Since(t0).Round(time.Millisecond))
	full, err := measureFederation(ctx, bin, srv.Clients[0], ns)
	if err != nil {
		return err
	}
	fmt.Println()
	fmt.Println("| keyspace | time to full view | RSS | Go heap in use | RSS vs empty |")
	fmt.Println("|---|---|---|---|---|")
	fmt.Printf("| empty | %v | %.1f MiB | %.1f MiB | 1.0x |\n", base.sync.Round(time.Millisecond), mib(base.rss), mib(base.heap))
	fmt.Printf("| %d clusters x %d services x %d endpoints | %v | %.1f MiB | %.1f MiB | %.1fx |\n", nc, ns, ne,
		full.sync.Round(time.Millisecond), mib(full.rss), mib(full.heap), float64(full.rss)/float64(base.rss))
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

type memResult struct {
	sync      time.Duration
	rss, heap int64
}

// measureFederation runs `meshfed federation` (importing only) against etcd until its view
// holds want services (the first full list is delivered at once), then reads its RSS and heap.
func measureFederation(ctx context.Context, bin, etcd string, want int) (memResult, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return memResult{}, err
	}
	admin := ln.Addr().String()
	ln.Close()
	cmd := exec.CommandContext(ctx, bin, "federation", "--cluster", "observer", "--etcd-endpoints", etcd, "--admin", admin, "--log-level", "warn")
	cmd.Stderr = os.Stderr
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return memResult{}, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var res memResult
	for deadline := time.Now().Add(10 * time.Minute); ; {
		if time.Now().After(deadline) {
			return res, fmt.Errorf("federation did not reach %d exports in 10m", want)
		}
		m, err := scrape("http://" + admin + "/metrics")
		if err == nil && m["meshfed_federation_view_revision"] > 0 && int(m["meshfed_federation_imported_services"]) >= want {
			res.sync = time.Since(t0)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	m, err := scrape("http://" + admin + "/metrics")
	if err != nil {
		return res, err
	}
	res.rss = int64(m["process_resident_memory_bytes"])
	res.heap = int64(m["go_memstats_heap_inuse_bytes"])
	return res, nil
}

func scrape(url string) (map[string]float64, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err == nil {
			out[f[0]] = v
		}
	}
	return out, nil
}
