package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/keyspace/view"
)

// published is what this cluster has in etcd for one service.
type published struct {
	rec    *records.Export
	modRev int64
}

type pubInfo struct {
	exportedAt time.Time
	revision   int64
}

// publisher writes the latest local snapshot to exports/<cluster>/..., touching only the
// services whose content changed. Snapshots coalesce: while one reconcile runs, newer
// snapshots replace each other and only the newest is applied next.
type publisher struct {
	st      *store.Store
	cluster string
	log     *slog.Logger
	m       *metrics
	now     func() time.Time

	mu   sync.Mutex
	kick chan struct{}
	// desired is the newest snapshot by service key; the view overlays it for the own
	// cluster so local changes reach local data planes even while etcd is unreachable.
	desired map[string]*records.Export
	synced  bool // a snapshot was fully written
	onLocal func(map[string]*records.Export)
	// info is what was last written per service: offered exports borrow their creation
	// time and revision from it, so the local overlay agrees with what peers read.
	info map[string]pubInfo

	state map[string]*published // by service key; owned by the run goroutine
}

func newPublisher(st *store.Store, cluster string, log *slog.Logger, m *metrics) *publisher {
	return &publisher{st: st, cluster: cluster, log: log, m: m, now: time.Now, kick: make(chan struct{}, 1)}
}

// offer queues a snapshot: every export of this cluster at one moment (the newest wins).
func (p *publisher) offer(exports []*records.Export) {
	desired := make(map[string]*records.Export, len(exports))
	overlay := make(map[string]*records.Export, len(exports))
	p.mu.Lock()
	for _, e := range exports {
		e.Cluster = p.cluster
		e.Canonicalize()
		k := view.Key(e.Namespace, e.Name)
		desired[k] = e
		// The overlay copy borrows creation time and revision from what was written, so
		// the local view agrees with what peers read; e itself stays as the source said.
		o := *e
		if in, ok := p.info[k]; ok {
			if o.ExportedAt.IsZero() {
				o.ExportedAt = in.exportedAt
			}
			o.Revision = in.revision
		} else if o.ExportedAt.IsZero() {
			o.ExportedAt = p.now().UTC()
		}
		overlay[k] = &o
	}
	p.desired = desired
	cb := p.onLocal
	p.mu.Unlock()
	if cb != nil {
		cb(overlay)
	}
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// reset forgets what was written: a replica that leads again re-reads etcd first (the
// other leader may have written meanwhile).
func (p *publisher) reset() {
	p.mu.Lock()
	p.synced = false
	p.mu.Unlock()
	p.state = nil // the run goroutine has stopped: nobody else touches state now
}

func (p *publisher) isSynced() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.synced
}

// run applies snapshots until ctx ends, retrying failed reconciles with backoff.
func (p *publisher) run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		}
		for ctx.Err() == nil {
			p.mu.Lock()
			desired := p.desired
			p.mu.Unlock()
			err := p.reconcile(ctx, desired)
			if err == nil {
				p.mu.Lock()
				p.synced = true
				p.info = make(map[string]pubInfo, len(p.state))
				for k, st := range p.state {
					p.info[k] = pubInfo{exportedAt: st.rec.ExportedAt, revision: st.rec.Revision}
				}
				current := p.onLocal != nil && sameMap(p.desired, desired)
				var written map[string]*records.Export
				if current {
					// Overlay what was written (with its revision), unless a newer
					// snapshot already replaced the one just published.
					written = make(map[string]*records.Export, len(p.state))
					for k, st := range p.state {
						written[k] = st.rec
					}
				}
				cb := p.onLocal
				p.mu.Unlock()
				if written != nil {
					cb(written)
				}
				backoff = 100 * time.Millisecond
				break
			}
			if ctx.Err() != nil {
				return
			}
			p.m.publishErrors.Inc()
			p.log.Warn("publishing exports failed; retrying", "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			case <-p.kick: // a newer snapshot: try it at once
			}
			backoff = min(backoff*2, 5*time.Second)
		}
	}
}

// load reads what this cluster has in etcd (at start, and after a write conflict).
func (p *publisher) load(ctx context.Context) error {
	items, _, bad, err := store.List[records.Export](ctx, p.st, p.st.KS.ExportsOf(p.cluster))
	if err != nil {
		return err
	}
	p.state = make(map[string]*published, len(items))
	for _, it := range items {
		v := it.Value
		p.state[view.Key(v.Namespace, v.Name)] = &published{rec: v, modRev: it.ModRevision}
	}
	for _, e := range bad {
		// Our own key holds something we cannot read: overwrite it with a good record.
		p.log.Warn("own export record unreadable; it will be rewritten", "err", e)
	}
	return nil
}

func (p *publisher) reconcile(ctx context.Context, desired map[string]*records.Export) error {
	if p.state == nil {
		if err := p.load(ctx); err != nil {
			return fmt.Errorf("read own exports: %w", err)
		}
	}
	now := p.now().UTC()
	// Changes go out in transactions of up to store.MaxBatch writes, each write with its
	// own compare on mod revision: a cluster with 10k services publishes in 100 round trips,
	// and a key someone else changed fails the batch instead of being overwritten.
	type change struct {
		key string
		rec *records.Export // nil: delete
		w   store.Write
	}
	var changes []change
	for key, want := range desired {
		cur := p.state[key]
		if cur != nil && cur.rec.SameContent(want) && (want.ExportedAt.IsZero() || want.ExportedAt.Equal(cur.rec.ExportedAt)) {
			continue
		}
		rec := *want
		rec.UpdatedAt = now
		rec.Revision = 1
		if rec.ExportedAt.IsZero() {
			rec.ExportedAt = now
		}
		w := store.Write{Key: p.st.KS.Export(p.cluster, rec.Namespace, rec.Name), Record: &rec}
		if cur != nil {
			rec.Revision = cur.rec.Revision + 1
			if want.ExportedAt.IsZero() {
				rec.ExportedAt = cur.rec.ExportedAt
			}
			w.ModRevision = cur.modRev
		}
		changes = append(changes, change{key: key, rec: &rec, w: w})
	}
	for key, cur := range p.state {
		if _, ok := desired[key]; !ok {
			changes = append(changes, change{key: key, w: store.Write{Key: p.st.KS.Export(p.cluster, cur.rec.Namespace, cur.rec.Name), ModRevision: cur.modRev}})
		}
	}
	puts, dels := 0, 0
	defer func() {
		if puts+dels > 0 {
			p.log.Info("exports published", "written", puts, "withdrawn", dels, "total", len(p.state))
		}
	}()
	for len(changes) > 0 {
		n := min(len(changes), store.MaxBatch)
		batch := changes[:n]
		changes = changes[n:]
		ws := make([]store.Write, n)
		for i, c := range batch {
			ws[i] = c.w
		}
		rev, err := p.st.CommitBatch(ctx, ws)
		if err != nil {
			if errors.Is(err, store.ErrConflict) {
				// Someone else wrote our keys (a second replica, an operator): re-read all.
				p.state = nil
			}
			return err
		}
		for _, c := range batch {
			if c.rec == nil {
				delete(p.state, c.key)
				p.m.published.WithLabelValues("delete").Inc()
				p.log.Debug("export withdrawn", "service", c.key)
				dels++
				continue
			}
			p.state[c.key] = &published{rec: c.rec, modRev: rev}
			p.m.published.WithLabelValues("put").Inc()
			p.log.Debug("export published", "service", c.key, "revision", c.rec.Revision, "ready_endpoints", c.rec.ReadyEndpoints())
			puts++
		}
	}
	return nil
}

// sameMap reports whether a and b are the same map (not equal content: the same one).
func sameMap(a, b map[string]*records.Export) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
