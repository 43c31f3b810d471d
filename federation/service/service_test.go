package service_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/discovery"
	"github.com/meshfed/meshfed/discovery/file"
	"github.com/meshfed/meshfed/federation/service"
	"github.com/meshfed/meshfed/internal/atomicfile"
	"github.com/meshfed/meshfed/internal/metrictest"
	"github.com/meshfed/meshfed/internal/testetcd"
	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/keyspace/embedetcd"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/keyspace/view"
)

type member struct {
	name    string
	path    string
	svc     *service.Service
	reg     *prometheus.Registry
	cancel  context.CancelFunc
	done    chan error
	pushes  atomic.Int64
	mu      sync.Mutex
	history map[string][]string // service -> summaries pushed
}

type fed struct {
	t   *testing.T
	srv *embedetcd.Server
	cli *clientv3.Client
	st  *store.Store
	dir string
}

func newFed(t *testing.T) *fed {
	srv := testetcd.Start(t)
	cli := testetcd.Client(t, srv)
	st, err := store.New(cli, records.DefaultPrefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &fed{t: t, srv: srv, cli: cli, st: st, dir: t.TempDir()}
}

func (f *fed) writeExports(name, content string) string {
	f.t.Helper()
	path := filepath.Join(f.dir, name+".yaml")
	if err := atomicfile.Write(path, []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
	return path
}

func (f *fed) start(name string, grace time.Duration) *member {
	return f.startTTL(name, grace, 2*time.Second)
}

func (f *fed) startTTL(name string, grace, ttl time.Duration) *member {
	f.t.Helper()
	m := &member{name: name, path: filepath.Join(f.dir, name+".yaml"), history: map[string][]string{}}
	if _, err := os.Stat(m.path); err != nil {
		f.writeExports(name, "services: []")
	}
	m.reg = prometheus.NewRegistry()
	svc, err := service.New(service.Config{
		Cluster: name, Store: f.st, HeartbeatTTL: ttl, StaleGrace: grace,
		Source:   discovery.ExportsOnly{Source: &file.Source{Cluster: name, Path: m.path, Interval: 10 * time.Millisecond}},
		Registry: m.reg,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	svc.OnView(func(v *view.View) {
		m.pushes.Add(1)
		m.mu.Lock()
		defer m.mu.Unlock()
		for k, s := range v.Services {
			h := m.history[k]
			sum := summarize(s)
			if len(h) == 0 || h[len(h)-1] != sum {
				m.history[k] = append(h, sum)
			}
		}
	})
	m.svc = svc
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel, m.done = cancel, make(chan error, 1)
	go func() { m.done <- svc.Run(ctx) }()
	f.t.Cleanup(m.stop)
	waitfor.Cond(f.t, 10*time.Second, func() bool { return svc.Ready() == nil }, "%s ready: %v", name, svc.Ready())
	return m
}

func (m *member) stop() {
	if m.cancel != nil {
		m.cancel()
		<-m.done
		m.cancel = nil
	}
}

func summarize(s *view.Service) string {
	out := ""
	for _, c := range s.Clusters {
		out += fmt.Sprintf("%s:%d:%v ", c.Cluster, c.ReadyEndpoints(), c.Stale)
	}
	return out
}

// exporter returns cluster's entry for demo/echo in m's view.
func (m *member) exporter(cluster string) *view.ClusterExport {
	s := m.svc.View().Services["demo/echo"]
	if s == nil {
		return nil
	}
	return s.Exporter(cluster)
}

const echoTwoReady = `services:
  - name: echo
    namespace: demo
    ports: [{name: tls, port: 8443, targetPort: 9443}]
    endpoints:
      - {address: 127.0.1.1, zone: z1}
      - {address: 127.0.1.2, zone: z2}
`

const echoOneReady = `services:
  - name: echo
    namespace: demo
    ports: [{name: tls, port: 8443, targetPort: 9443}]
    endpoints:
      - {address: 127.0.1.1, zone: z1}
      - {address: 127.0.1.2, zone: z2, ready: false}
`

func TestExportsFlowBetweenThreeClusters(t *testing.T) {
	f := newFed(t)
	f.writeExports("west", echoTwoReady)
	east := f.start("east", time.Minute)
	west := f.start("west", time.Minute)
	north := f.start("north", time.Minute)

	for _, m := range []*member{east, north, west} {
		waitfor.Cond(t, 10*time.Second, func() bool {
			e := m.exporter("west")
			return e != nil && e.ReadyEndpoints() == 2 && !e.Stale
		}, "%s sees west's export with 2 ready endpoints", m.name)
	}
	// North exports the same service too: both show up, merged.
	f.writeExports("north", echoTwoReady)
	waitfor.Cond(t, 10*time.Second, func() bool {
		s := east.svc.View().Services["demo/echo"]
		return s != nil && len(s.Clusters) == 2 && len(s.Conflicts) == 0
	}, "east sees west and north")

	// Readiness change propagates.
	f.writeExports("west", echoOneReady)
	waitfor.Cond(t, 10*time.Second, func() bool { e := east.exporter("west"); return e != nil && e.ReadyEndpoints() == 1 }, "readiness change reaches east")
	it, err := store.Get[records.Export](context.Background(), f.st, f.st.KS.Export("west", "demo", "echo"))
	if err != nil || it.Value.Revision != 2 {
		t.Fatalf("west's export record = %+v, %v: want revision 2 after one change", it, err)
	}

	// Unexport removes it.
	f.writeExports("west", "services: []")
	waitfor.Cond(t, 10*time.Second, func() bool { return east.exporter("west") == nil && east.exporter("north") != nil }, "west's unexport reaches east")
	if _, err := store.Get[records.Export](context.Background(), f.st, f.st.KS.Export("west", "demo", "echo")); err == nil {
		t.Fatal("west's export record is still in etcd after unexport")
	}

	// An invalid edit keeps the last good export published.
	f.writeExports("north", "services: [{name: BAD}]")
	f.writeExports("north", echoOneReady)
	waitfor.Cond(t, 10*time.Second, func() bool { e := east.exporter("north"); return e != nil && e.ReadyEndpoints() == 1 }, "north's good edit after a bad one")

	// The import table serves the contract's JSON shape.
	tab := service.ImportTable(east.svc.View())
	if len(tab) != 1 || tab[0].Namespace != "demo" || tab[0].Name != "echo" || len(tab[0].Clusters) != 1 || tab[0].Clusters[0].Cluster != "north" {
		t.Fatalf("import table = %+v", tab)
	}
}

func TestStaleThenRemovedAfterGrace(t *testing.T) {
	f := newFed(t)
	f.writeExports("west", echoTwoReady)
	east := f.start("east", 3*time.Second)
	west := f.start("west", 3*time.Second)
	waitfor.Cond(t, 10*time.Second, func() bool { e := east.exporter("west"); return e != nil && !e.Stale }, "east sees west")

	west.stop() // the heartbeat lease (TTL 2s) now expires; exports stay in etcd
	waitfor.Cond(t, 15*time.Second, func() bool { e := east.exporter("west"); return e != nil && e.Stale }, "west marked stale")
	if got := metrictest.Sum(t, east.reg, "meshfed_federation_stale_clusters"); got != 1 {
		t.Errorf("stale clusters gauge = %v, want 1", got)
	}
	waitfor.Cond(t, 15*time.Second, func() bool { return east.exporter("west") == nil }, "west removed after the grace")
	if _, err := store.Get[records.Export](context.Background(), f.st, f.st.KS.Export("west", "demo", "echo")); err != nil {
		t.Fatalf("west's record must stay in etcd (only west or an operator deletes it): %v", err)
	}

	// West comes back: its exports are live again.
	f.start("west", 3*time.Second)
	waitfor.Cond(t, 10*time.Second, func() bool { e := east.exporter("west"); return e != nil && !e.Stale }, "west back")
}

func TestRestartRepublishesWithoutFlapping(t *testing.T) {
	f := newFed(t)
	f.writeExports("west", echoTwoReady)
	east := f.start("east", time.Minute)
	// A long TTL: the restart below must fit inside it even on a loaded machine.
	west := f.startTTL("west", time.Minute, 30*time.Second)
	waitfor.Cond(t, 10*time.Second, func() bool { e := east.exporter("west"); return e != nil }, "east sees west")
	before, err := store.Get[records.Export](context.Background(), f.st, f.st.KS.Export("west", "demo", "echo"))
	if err != nil {
		t.Fatal(err)
	}
	east.mu.Lock()
	hist := len(east.history["demo/echo"])
	first := east.history["demo/echo"][0]
	east.mu.Unlock()
	// West holds its heartbeat before it publishes: east never sees it stale at first.
	if strings.Contains(first, ":true") {
		t.Fatalf("east first saw west's exports as a stale cluster's: %q", first)
	}

	west.stop()
	west2 := f.startTTL("west", time.Minute, 30*time.Second) // ready = published (nothing to publish)
	if got := metrictest.Sum(t, west2.reg, "meshfed_federation_exports_published_total"); got != 0 {
		t.Errorf("restarted west wrote %v export records; want 0 (content unchanged)", got)
	}
	after, err := store.Get[records.Export](context.Background(), f.st, f.st.KS.Export("west", "demo", "echo"))
	if err != nil || after.ModRevision != before.ModRevision {
		t.Fatalf("export rewritten on restart: mod revision %d -> %d (%v)", before.ModRevision, after.ModRevision, err)
	}
	// A restart within the heartbeat TTL never makes west look stale to east.
	east.mu.Lock()
	defer east.mu.Unlock()
	if h := east.history["demo/echo"]; len(h) != hist {
		t.Fatalf("east's view of demo/echo changed across west's restart: %v", h)
	}
}

// switchElector is a test elector: the test says who leads. (The production elector is
// a Kubernetes Lease, tested against a real apiserver in discovery/kube.)
type switchElector struct {
	mu   sync.Mutex
	lead bool
	ch   chan struct{}
}

func newSwitchElector(lead bool) *switchElector {
	return &switchElector{lead: lead, ch: make(chan struct{}, 1)}
}

func (e *switchElector) set(lead bool) {
	e.mu.Lock()
	e.lead = lead
	e.mu.Unlock()
	select {
	case e.ch <- struct{}{}:
	default:
	}
}

func (e *switchElector) Run(ctx context.Context, lead func(context.Context)) error {
	for ctx.Err() == nil {
		e.mu.Lock()
		l := e.lead
		e.mu.Unlock()
		if !l {
			select {
			case <-ctx.Done():
			case <-e.ch:
			}
			continue
		}
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { lead(lctx); close(done) }()
		for {
			select {
			case <-ctx.Done():
			case <-e.ch:
				e.mu.Lock()
				l = e.lead
				e.mu.Unlock()
				if l {
					continue
				}
			}
			break
		}
		cancel()
		<-done
	}
	return nil
}

func TestOnlyTheLeaderPublishes(t *testing.T) {
	f := newFed(t)
	f.writeExports("west", echoTwoReady)
	east := f.start("east", time.Minute)
	start := func(e *switchElector) (*service.Service, *prometheus.Registry) {
		reg := prometheus.NewRegistry()
		svc, err := service.New(service.Config{Cluster: "west", Store: f.st, HeartbeatTTL: 30 * time.Second, StaleGrace: time.Minute,
			Source:  discovery.ExportsOnly{Source: &file.Source{Cluster: "west", Path: filepath.Join(f.dir, "west.yaml"), Interval: 10 * time.Millisecond}},
			Elector: e, Registry: reg})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- svc.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		return svc, reg
	}
	ea, eb := newSwitchElector(true), newSwitchElector(false)
	a, regA := start(ea)
	b, regB := start(eb)
	waitfor.Cond(t, 10*time.Second, func() bool { return a.Ready() == nil && b.Ready() == nil }, "replicas ready")
	waitfor.Cond(t, 10*time.Second, func() bool { e := east.exporter("west"); return e != nil && e.ReadyEndpoints() == 2 }, "east sees west")
	if !a.Leading() || b.Leading() {
		t.Fatalf("leading: a=%v b=%v", a.Leading(), b.Leading())
	}
	if got := metrictest.Sum(t, regB, "meshfed_federation_exports_published_total"); got != 0 {
		t.Fatalf("the follower wrote %v records", got)
	}
	// The follower serves the same view (it mirrors etcd).
	waitfor.Cond(t, 10*time.Second, func() bool {
		s := b.View().Services["demo/echo"]
		return s != nil && s.Exporter("west") != nil && s.Exporter("west").ReadyEndpoints() == 2
	}, "follower's view")

	// Hand over: a stops writing, b takes over; content unchanged, so nothing is rewritten.
	ea.set(false)
	eb.set(true)
	waitfor.Cond(t, 10*time.Second, func() bool { return b.Leading() && !a.Leading() && b.Ready() == nil }, "b leads")
	// The new leader follows the source from now on.
	f.writeExports("west", echoOneReady)
	waitfor.Cond(t, 10*time.Second, func() bool { e := east.exporter("west"); return e != nil && e.ReadyEndpoints() == 1 }, "b publishes the change")
	if got := metrictest.Sum(t, regA, "meshfed_federation_exports_published_total"); got != 1 {
		t.Fatalf("the old leader wrote %v records; want only its first publication", got)
	}
	waitfor.Cond(t, 10*time.Second, func() bool {
		s := a.View().Services["demo/echo"]
		return s != nil && s.Exporter("west") != nil && s.Exporter("west").ReadyEndpoints() == 1
	}, "the old leader's view follows etcd, not its stopped source")
}
