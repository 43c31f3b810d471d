package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/meshfed/meshfed/discovery"
	"github.com/meshfed/meshfed/federation/imports"
	"github.com/meshfed/meshfed/federation/records"
	"github.com/meshfed/meshfed/federation/store"
)

// published is what this cluster has in etcd for one service.
type published struct {
	rec    *records.Export
	modRev int64
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

	mu      sync.Mutex
	pending *discovery.Snapshot
	kick    chan struct{}
	// desired is the newest snapshot by service key; the view overlays it for the own
	// cluster so local changes reach local data planes even while etcd is unreachable.
	desired map[string]*records.Export
	synced  bool // a snapshot was fully written
	onLocal func(map[string]*records.Export)

	state map[string]*published // by service key; owned by the run goroutine
}

func newPublisher(st *store.Store, cluster string, log *slog.Logger, m *metrics) *publisher {
	return &publisher{st: st, cluster: cluster, log: log, m: m, now: time.Now, kick: make(chan struct{}, 1)}
}

// offer queues a snapshot (the newest wins).
func (p *publisher) offer(s discovery.Snapshot) {
	desired := make(map[string]*records.Export, len(s.Exports))
	for _, e := range s.Exports {
		e.Cluster = p.cluster
		e.Canonicalize()
		desired[imports.Key(e.Namespace, e.Name)] = e
	}
	p.mu.Lock()
	p.pending = &s
	p.desired = desired
	cb := p.onLocal
	p.mu.Unlock()
	if cb != nil {
		cb(desired)
	}
	select {
	case p.kick <- struct{}{}:
	default:
	}
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
				p.mu.Unlock()
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
		p.state[imports.Key(v.Namespace, v.Name)] = &published{rec: v, modRev: it.ModRevision}
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
	var errs []error
	now := p.now().UTC()
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
		var rev int64
		var err error
		k := p.st.KS.Export(p.cluster, rec.Namespace, rec.Name)
		if cur != nil {
			rec.Revision = cur.rec.Revision + 1
			if want.ExportedAt.IsZero() {
				rec.ExportedAt = cur.rec.ExportedAt
			}
			rev, err = p.st.Update(ctx, k, &rec, cur.modRev)
		} else {
			rev, err = p.st.Create(ctx, k, &rec)
		}
		if err != nil {
			if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrExists) {
				// Someone else wrote our key (a second replica, an operator): re-read all.
				p.state = nil
			}
			errs = append(errs, err)
			if p.state == nil {
				break
			}
			continue
		}
		p.state[key] = &published{rec: &rec, modRev: rev}
		p.m.published.WithLabelValues("put").Inc()
		p.log.Info("export published", "service", key, "revision", rec.Revision, "ready_endpoints", rec.ReadyEndpoints())
	}
	if p.state != nil {
		for key, cur := range p.state {
			if _, ok := desired[key]; ok {
				continue
			}
			k := p.st.KS.Export(p.cluster, cur.rec.Namespace, cur.rec.Name)
			if err := p.st.Delete(ctx, k, cur.modRev); err != nil {
				if errors.Is(err, store.ErrConflict) {
					p.state = nil
				}
				errs = append(errs, err)
				if p.state == nil {
					break
				}
				continue
			}
			delete(p.state, key)
			p.m.published.WithLabelValues("delete").Inc()
			p.log.Info("export withdrawn", "service", key)
		}
	}
	return errors.Join(errs...)
}
