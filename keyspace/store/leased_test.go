package store_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/keyspace/records"
)

// TestLeased: the record is written on its own lease once Run starts (Set before Run
// included); Sets in quick succession are coalesced (the latest wins, writes at most once
// per MinInterval); a lost lease (revoked behind its back) is replaced and the record
// written again; stopping revokes the lease, so the key goes at once, not after the TTL;
// an invalid record is refused by Set with the key named.
func TestLeased(t *testing.T) {
	s, cli := newStore(t)
	const key = "meshfed/test/leased"
	const ttl = 10 * time.Second
	l := s.NewLeased(key, ttl)
	l.MinInterval = 3 * time.Second

	// Every put and delete of the key, in order (watched from before the first write).
	type event struct {
		put   bool
		name  string
		lease int64
	}
	var mu sync.Mutex
	var events []event
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	r0, err := cli.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	wch := cli.Watch(wctx, key, clientv3.WithRev(r0.Header.Revision+1))
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for r := range wch {
			for _, ev := range r.Events {
				e := event{put: ev.Type == clientv3.EventTypePut, lease: ev.Kv.Lease}
				if e.put {
					c, err := records.Decode[records.Cluster](ev.Kv.Value)
					if err != nil {
						t.Errorf("written value: %v", err)
						continue
					}
					e.name = c.Name
				}
				mu.Lock()
				events = append(events, e)
				mu.Unlock()
			}
		}
	}()
	snapshot := func() []event {
		mu.Lock()
		defer mu.Unlock()
		return append([]event(nil), events...)
	}

	if err := l.Set(cluster("a")); err != nil {
		t.Fatal(err)
	}
	if l.Written() != nil {
		t.Fatal("Written before Run")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	running := true
	defer func() {
		if running {
			cancel()
			<-done
		}
	}()

	get := func() (string, int64) {
		t.Helper()
		r, err := cli.Get(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Kvs) == 0 {
			return "", 0
		}
		c, err := records.Decode[records.Cluster](r.Kvs[0].Value)
		if err != nil {
			t.Fatal(err)
		}
		return c.Name, r.Kvs[0].Lease
	}
	waitfor.Cond(t, 10*time.Second, func() bool { n, _ := get(); return n == "a" }, "the record set before Run written")
	_, lease1 := get()
	if lease1 == 0 {
		t.Fatal("the record is not on a lease")
	}
	if w := l.Written(); w == nil || !strings.Contains(string(w), `"name":"a"`) {
		t.Fatalf("Written() = %s", w)
	}
	ttlResp, err := cli.TimeToLive(context.Background(), clientv3.LeaseID(lease1))
	if err != nil || ttlResp.GrantedTTL != int64(ttl/time.Second) {
		t.Fatalf("lease TTL = %+v, %v; want %v", ttlResp, err, ttl)
	}

	// Two Sets right after the first write: within MinInterval (3 s) neither is written;
	// then only the latest is.
	if err := l.Set(cluster("b")); err != nil {
		t.Fatal(err)
	}
	if err := l.Set(cluster("c")); err != nil {
		t.Fatal(err)
	}
	if n, _ := get(); n != "a" {
		t.Fatalf("written %q within MinInterval of the previous write", n)
	}
	waitfor.Cond(t, 10*time.Second, func() bool { n, _ := get(); return n == "c" }, "the latest record written after MinInterval")
	if _, l2 := get(); l2 != lease1 {
		t.Fatalf("rewritten on lease %x, want the same lease %x", l2, lease1)
	}
	waitfor.Cond(t, 5*time.Second, func() bool { return len(snapshot()) >= 2 }, "the watch saw both writes")
	if got := snapshot(); len(got) != 2 || got[0].name != "a" || got[1].name != "c" {
		t.Fatalf("writes = %+v, want a then c (b coalesced away)", got)
	}
	// Setting what is already written writes nothing.
	if err := l.Set(cluster("c")); err != nil {
		t.Fatal(err)
	}

	// The lease is lost (revoked behind the holder's back, as when etcd expires it): the
	// key goes with it, and the holder writes the record again on a new lease.
	if _, err := cli.Revoke(context.Background(), clientv3.LeaseID(lease1)); err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 15*time.Second, func() bool { n, l := get(); return n == "c" && l != 0 && l != lease1 }, "the record back on a new lease")
	_, lease2 := get()
	// The Get above can see the rewrite before the watch has delivered the delete and the
	// put: wait for them (more than four fails below).
	waitfor.Cond(t, 5*time.Second, func() bool { return len(snapshot()) >= 4 }, "the watch saw the delete and the rewrite")
	got := snapshot()
	if len(got) != 4 || got[2].put || !got[3].put || got[3].name != "c" || got[3].lease != lease2 {
		t.Fatalf("events after the lease was lost = %+v; want a, c, delete, c on the new lease", got)
	}

	// Refused: an invalid record, named by its key; the written record stays.
	if err := l.Set(&records.Cluster{}); err == nil || !strings.Contains(err.Error(), key) {
		t.Fatalf("Set(invalid) = %v, want an error naming %s", err, key)
	}

	// Stop: the lease is revoked, so the key goes at once (well within its 10 s TTL).
	stopped := time.Now()
	cancel()
	running = false
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if n, _ := get(); n != "" {
		t.Fatalf("key still there after Run returned (%q)", n)
	}
	if took := time.Since(stopped); took > ttl/2 {
		t.Fatalf("key removed %v after stop: not revoked, expired", took)
	}
	ttlResp, err = cli.TimeToLive(context.Background(), clientv3.LeaseID(lease2))
	if err != nil || ttlResp.TTL != -1 {
		t.Fatalf("lease after stop: %+v, %v; want revoked (TTL -1)", ttlResp, err)
	}
	// The same for the delete at stop: delivered by the watch, then the watch ends.
	waitfor.Cond(t, 5*time.Second, func() bool { return len(snapshot()) >= 5 }, "the watch saw the delete at stop")
	wcancel()
	<-watchDone
	if got := snapshot(); len(got) != 5 || got[4].put {
		t.Fatalf("events = %+v; the last must be the delete at stop", got)
	}
}
