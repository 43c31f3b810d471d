package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/internal/testetcd"
	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
)

func newStore(t *testing.T) (*store.Store, *clientv3.Client) {
	t.Helper()
	srv := testetcd.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err := store.Dial(ctx, store.Config{Endpoints: srv.Clients, Prefix: records.DefaultPrefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	s, err := store.New(cli, records.DefaultPrefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, cli
}

func cluster(name string) *records.Cluster {
	return &records.Cluster{Name: name, Network: "n1", Region: "r1", Zone: "z1", TrustDomain: name + ".example",
		Gateways: []string{"127.0.0.1:15443"}, JoinedAt: time.Unix(1, 0).UTC()}
}

func TestCreateUpdateDelete(t *testing.T) {
	s, cli := newStore(t)
	ctx := context.Background()
	key := s.KS.Cluster("west")
	if _, err := s.Create(ctx, key, cluster("west")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, key, cluster("west")); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	it, err := store.Get[records.Cluster](ctx, s, key)
	if err != nil || it.Value.Name != "west" || it.Value.Version != records.CurrentVersion {
		t.Fatalf("get = %+v, %v", it, err)
	}
	// A concurrent writer changes the key: an update against the old revision must fail.
	if _, err := cli.Put(ctx, key, `{"version":1,"name":"west","network":"n2","region":"r1","zone":"z1","trustDomain":"west.example","gateways":["127.0.0.1:1"],"joinedAt":"2020-01-01T00:00:00Z"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, key, cluster("west"), it.ModRevision); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale update: %v, want ErrConflict", err)
	}
	if err := s.Delete(ctx, key, it.ModRevision); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale delete: %v, want ErrConflict", err)
	}
	it, _ = store.Get[records.Cluster](ctx, s, key)
	if it.Value.Network != "n2" {
		t.Fatalf("network = %s", it.Value.Network)
	}
	if err := s.Delete(ctx, key, it.ModRevision); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Get[records.Cluster](ctx, s, key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	// Invalid records are refused before they reach etcd.
	bad := cluster("west")
	bad.Gateways = nil
	if _, err := s.Create(ctx, key, bad); err == nil {
		t.Fatal("created a cluster without gateways")
	}
}

func TestModifyRetriesOnConflict(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	key := s.KS.Policy("demo", "echo")
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := store.Modify[records.Policy](ctx, s, key, func(cur *records.Policy) (*records.Policy, error) {
				p := &records.Policy{Namespace: "demo", Name: "echo", UpdatedAt: time.Now()}
				if cur != nil {
					p.Order = append(p.Order, cur.Order...)
				}
				p.Order = append(p.Order, "c"+string(rune('a'+i)))
				return p, nil
			})
			if err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	it, err := store.Get[records.Policy](ctx, s, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(it.Value.Order) != 8 {
		t.Fatalf("order = %v: a concurrent modification was lost", it.Value.Order)
	}
}

func TestListSkipsBadRecords(t *testing.T) {
	s, cli := newStore(t)
	ctx := context.Background()
	for i := 0; i < 1050; i++ { // more than one page
		c := cluster("c" + itoa(i))
		if _, err := s.Create(ctx, s.KS.Cluster(c.Name), c); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Put(ctx, s.KS.Cluster("broken"), `{"version":1,"name":"broken"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, s.KS.Cluster("future"), `{"version":9,"name":"future"}`); err != nil {
		t.Fatal(err)
	}
	items, rev, bad, err := store.List[records.Cluster](ctx, s, s.KS.Family(records.KindCluster))
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 1050 || len(bad) != 2 || rev == 0 {
		t.Fatalf("items=%d bad=%v rev=%d", len(items), bad, rev)
	}
}

type recorder struct {
	mu     sync.Mutex
	state  map[string]string
	resets int
	rev    int64
}

func (r *recorder) Reset(kvs []store.KV, rev int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.state = map[string]string{}
	for _, kv := range kvs {
		r.state[kv.Key] = string(kv.Value)
	}
	r.resets++
	r.rev = rev
}

func (r *recorder) Apply(evs []store.Event, rev int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range evs {
		if e.Delete {
			delete(r.state, e.KV.Key)
		} else {
			r.state[e.KV.Key] = string(e.KV.Value)
		}
	}
	r.rev = rev
}

func (r *recorder) get(k string) (string, bool, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.state[k]
	return v, ok, r.resets
}

func TestSyncerMirrorsAndResyncsAfterCompaction(t *testing.T) {
	s, cli := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pre := s.KS.Prefix()
	if _, err := cli.Put(ctx, pre+"a", "1"); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	y := s.NewSyncer(pre, rec)
	done := make(chan struct{})
	go func() { _ = y.Run(ctx); close(done) }()
	waitfor.Cond(t, 5*time.Second, func() bool { v, ok, _ := rec.get(pre + "a"); return ok && v == "1" }, "initial list")
	if _, err := cli.Put(ctx, pre+"b", "2"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, pre+"a"); err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 5*time.Second, func() bool {
		_, okA, _ := rec.get(pre + "a")
		v, okB, _ := rec.get(pre + "b")
		return !okA && okB && v == "2"
	}, "watch events")

	// Cut the watch: stop the syncer, write while nobody watches, compact past what it saw,
	// then restart it from the revision it had. It must notice the compaction and re-list.
	cancel()
	<-done
	last := y.Status().Revision
	for i := 0; i < 5; i++ {
		if _, err := cli.Put(context.Background(), pre+"c", itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	r, _ := cli.Delete(context.Background(), pre+"b")
	if _, err := cli.Compact(context.Background(), r.Header.Revision); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	y2 := s.NewSyncer(pre, rec)
	// Resume from the old revision, as a long-running watcher would after a disconnect.
	go func() { _ = store.RunFrom(ctx2, y2, last) }()
	waitfor.Cond(t, 5*time.Second, func() bool {
		v, okC, resets := rec.get(pre + "c")
		_, okB, _ := rec.get(pre + "b")
		return okC && v == "4" && !okB && resets == 2
	}, "resync after compaction: state %v", rec.state)
	if y2.Status().Resyncs != 1 {
		t.Fatalf("resyncs = %d, want 1", y2.Status().Resyncs)
	}
}

func TestHeartbeatExpiresWhenStopped(t *testing.T) {
	s, cli := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	h := s.NewHeartbeat("west", "test/1", 2*time.Second)
	done := make(chan struct{})
	go func() { _ = h.Run(ctx); close(done) }()
	key := s.KS.Alive("west")
	waitfor.Cond(t, 5*time.Second, func() bool { ok, _ := h.Alive(); return ok }, "heartbeat alive")
	r, err := cli.Get(context.Background(), key)
	if err != nil || len(r.Kvs) != 1 || r.Kvs[0].Lease == 0 {
		t.Fatalf("alive key = %v, %v: want one key on a lease", r, err)
	}
	// Keep-alives hold the key past its TTL.
	lease := clientv3.LeaseID(r.Kvs[0].Lease)
	start := time.Now()
	waitfor.Cond(t, 10*time.Second, func() bool {
		ttl, err := cli.TimeToLive(context.Background(), lease)
		return err == nil && ttl.TTL > 0 && time.Since(start) > 3*time.Second
	}, "the heartbeat lease must outlive its 2s TTL while the process runs")
	cancel()
	<-done
	waitfor.Cond(t, 20*time.Second, func() bool {
		r, err := cli.Get(context.Background(), key)
		return err == nil && len(r.Kvs) == 0
	}, "alive key should expire with its lease after the process stops")
}

func itoa(i int) string {
	const d = "0123456789"
	if i < 10 {
		return d[i : i+1]
	}
	return itoa(i/10) + d[i%10:i%10+1]
}

func TestCommitBatchAllOrNothing(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	a, b := s.KS.Cluster("a"), s.KS.Cluster("b")
	rev, err := s.CommitBatch(ctx, []store.Write{{Key: a, Record: cluster("a")}, {Key: b, Record: cluster("b")}})
	if err != nil {
		t.Fatal(err)
	}
	// One stale compare fails the whole batch: neither key changes.
	ca := cluster("a")
	ca.Network = "n9"
	if _, err := s.CommitBatch(ctx, []store.Write{{Key: a, Record: ca, ModRevision: rev}, {Key: b, Record: cluster("b")}}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("batch with a stale create: %v, want ErrConflict", err)
	}
	it, _ := store.Get[records.Cluster](ctx, s, a)
	if it.Value.Network != "n1" {
		t.Fatal("a failed batch changed a key")
	}
	// Deletes with the right revision go through.
	if _, err := s.CommitBatch(ctx, []store.Write{{Key: a, ModRevision: rev}, {Key: b, ModRevision: rev}}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Get[records.Cluster](ctx, s, a); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a after delete: %v", err)
	}
}
