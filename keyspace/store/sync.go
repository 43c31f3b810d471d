package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/meshfed/meshfed/internal/ctxtime"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// KV is one raw key-value of a mirrored prefix.
type KV struct {
	Key            string
	Value          []byte
	CreateRevision int64
	ModRevision    int64
	Lease          int64
}

// Event is one change: a put of KV, or its deletion (Value empty).
type Event struct {
	Delete bool
	KV     KV
}

// Handler receives a mirror of a prefix. Reset brings the whole state (at start, and again
// after a compaction made incremental resumption impossible); Apply brings the events of
// one or more revisions, in order. Calls are never concurrent.
type Handler interface {
	Reset(kvs []KV, rev int64)
	Apply(evs []Event, rev int64)
}

// SyncStatus is what a Syncer reports about itself.
type SyncStatus struct {
	// Synced: the first full list has been delivered.
	Synced bool
	// Watching: a watch is established and has not failed since.
	Watching bool
	// Revision is the last revision delivered to the handler.
	Revision int64
	// Resyncs counts full re-lists after compaction.
	Resyncs int
	// LastError is the last error seen (nil once watching again).
	LastError error
	// LastProgress is when etcd last confirmed the watch is current (event or progress notify).
	LastProgress time.Time
}

// Syncer mirrors one prefix into a Handler: list at a revision, then watch from the next
// revision; on a broken watch it resumes from last revision + 1, and on "required revision
// has been compacted" it re-lists in full. While etcd is unreachable the handler keeps the
// last state it was given (static stability): nothing is cleared on disconnect.
type Syncer struct {
	s      *Store
	prefix string
	h      Handler
	// Backoff bounds retry delays (default 100ms .. 5s).
	MinBackoff, MaxBackoff time.Duration
	// OnStatus, if set, is called after every status change (for metrics and logs).
	OnStatus func(SyncStatus)

	mu         sync.Mutex
	status     SyncStatus
	resumeFrom int64
}

// NewSyncer makes a syncer of prefix into h.
func (s *Store) NewSyncer(prefix string, h Handler) *Syncer {
	return &Syncer{s: s, prefix: prefix, h: h, MinBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second}
}

// Status returns a copy of the current status.
func (y *Syncer) Status() SyncStatus {
	y.mu.Lock()
	defer y.mu.Unlock()
	return y.status
}

func (y *Syncer) update(f func(*SyncStatus)) {
	y.mu.Lock()
	f(&y.status)
	st := y.status
	y.mu.Unlock()
	if y.OnStatus != nil {
		y.OnStatus(st)
	}
}

// Run mirrors until ctx ends. It returns nil on cancellation; every other error is retried.
func (y *Syncer) Run(ctx context.Context) error {
	backoff := y.MinBackoff
	rev := y.resumeFrom // last revision delivered; 0 means a full list is needed
	for ctx.Err() == nil {
		if rev == 0 {
			r, err := y.list(ctx)
			if err != nil {
				y.fail(err)
				if !ctxtime.Sleep(ctx, backoff) {
					break
				}
				backoff = nextBackoff(backoff, y.MaxBackoff)
				continue
			}
			rev = r
		}
		next, err := y.watch(ctx, rev)
		rev = next
		if ctx.Err() != nil {
			break
		}
		if errors.Is(err, rpctypes.ErrCompacted) {
			y.s.log.Warn("etcd history compacted past our watch; re-listing", "prefix", y.prefix, "revision", rev)
			y.update(func(s *SyncStatus) { s.Resyncs++ })
			rev = 0
			backoff = y.MinBackoff
			continue
		}
		y.fail(err)
		if !ctxtime.Sleep(ctx, backoff) {
			break
		}
		backoff = nextBackoff(backoff, y.MaxBackoff)
	}
	return nil
}

func (y *Syncer) fail(err error) {
	if err == nil {
		err = errors.New("watch ended")
	}
	y.update(func(s *SyncStatus) { s.Watching = false; s.LastError = err })
}

func (y *Syncer) list(ctx context.Context) (int64, error) {
	var kvs []KV
	var rev int64
	err := y.s.scan(ctx, y.prefix, 0, func(key string, value []byte, create, mod, lease int64) {
		kvs = append(kvs, KV{Key: key, Value: value, CreateRevision: create, ModRevision: mod, Lease: lease})
	}, &rev)
	if err != nil {
		return 0, err
	}
	y.h.Reset(kvs, rev)
	y.update(func(s *SyncStatus) {
		s.Synced, s.Revision, s.LastError, s.LastProgress = true, rev, nil, time.Now()
	})
	return rev, nil
}

// watch delivers events after rev until the watch breaks; it returns the last delivered
// revision and why it stopped.
func (y *Syncer) watch(ctx context.Context, rev int64) (int64, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := y.s.cli.Watch(wctx, y.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1),
		clientv3.WithProgressNotify(), clientv3.WithCreatedNotify())
	for resp := range wch {
		if resp.CompactRevision != 0 {
			return rev, rpctypes.ErrCompacted
		}
		if err := resp.Err(); err != nil {
			return rev, fmt.Errorf("watch %s: %w", y.prefix, err)
		}
		if resp.Created {
			y.update(func(s *SyncStatus) { s.Watching, s.LastError, s.LastProgress = true, nil, time.Now() })
			continue
		}
		if len(resp.Events) == 0 {
			y.update(func(s *SyncStatus) { s.LastProgress = time.Now() })
			continue
		}
		evs := make([]Event, 0, len(resp.Events))
		for _, e := range resp.Events {
			kv := KV{Key: string(e.Kv.Key), Value: e.Kv.Value, CreateRevision: e.Kv.CreateRevision, ModRevision: e.Kv.ModRevision, Lease: e.Kv.Lease}
			evs = append(evs, Event{Delete: e.Type == mvccpb.DELETE, KV: kv})
		}
		rev = resp.Header.Revision
		y.h.Apply(evs, rev)
		y.update(func(s *SyncStatus) { s.Revision, s.Watching, s.LastProgress = rev, true, time.Now() })
	}
	if err := ctx.Err(); err != nil {
		return rev, err
	}
	return rev, fmt.Errorf("watch %s closed", y.prefix)
}

func nextBackoff(d, max time.Duration) time.Duration {
	d *= 2
	if d > max {
		return max
	}
	return d
}

// RunFrom is Run starting with a watch from rev+1 instead of a full list, as if the
// syncer had already delivered rev (tests use it to exercise resumption).
func RunFrom(ctx context.Context, y *Syncer, rev int64) error {
	y.resumeFrom = rev
	return y.Run(ctx)
}
