package store

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/internal/ctxtime"
	"github.com/meshfed/meshfed/keyspace/records"
)

// Leased keeps one record under one key on its own lease: the process's report of
// something that is true only while the process runs (e.g. acks/<cluster>/istio/<instance>).
// Run grants the lease and writes the latest record given to Set, rewrites it after each
// Set (at most once per MinInterval, the latest wins), grants a new lease and writes again
// when the lease is lost, and revokes the lease (removing the key) when it ends. The key is
// the writer's own: writes do not depend on a read.
type Leased struct {
	s   *Store
	key string
	ttl time.Duration
	// MinInterval spaces writes (default 1 s).
	MinInterval time.Duration

	mu    sync.Mutex
	rec   []byte
	kick  chan struct{}
	wrote []byte
}

// NewLeased prepares a leased record at key with a lease of ttl (default
// DefaultHeartbeatTTL).
func (s *Store) NewLeased(key string, ttl time.Duration) *Leased {
	if ttl <= 0 {
		ttl = DefaultHeartbeatTTL
	}
	return &Leased{s: s, key: key, ttl: ttl, MinInterval: time.Second, kick: make(chan struct{}, 1)}
}

// Set makes rec the record to write (encoded now: an invalid record is refused here).
func (l *Leased) Set(rec records.Record) error {
	b, err := records.Encode(rec)
	if err != nil {
		return fmt.Errorf("%s: %w", l.key, err)
	}
	l.mu.Lock()
	l.rec = b
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
	return nil
}

// Written is the value last written (nil before the first write).
func (l *Leased) Written() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.wrote
}

// Run holds the record until ctx ends, then revokes its lease.
func (l *Leased) Run(ctx context.Context) error {
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		err := l.hold(ctx)
		if ctx.Err() != nil {
			break
		}
		l.s.log.Warn("leased record lost; writing it again", "key", l.key, "err", err)
		if !ctxtime.Sleep(ctx, backoff) {
			break
		}
		backoff = nextBackoff(backoff, 2*time.Second)
	}
	return nil
}

func (l *Leased) hold(ctx context.Context) error {
	gctx, cancel := context.WithTimeout(ctx, l.ttl)
	lease, err := l.s.cli.Grant(gctx, int64(l.ttl/time.Second))
	cancel()
	if err != nil {
		return fmt.Errorf("grant lease of %s: %w", l.key, err)
	}
	defer func() {
		// Gone with this holder: remove the key now rather than after the TTL.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_, _ = l.s.cli.Revoke(rctx, lease.ID)
		cancel()
	}()
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	ka, err := l.s.cli.KeepAlive(kctx, lease.ID)
	if err != nil {
		return fmt.Errorf("keep lease of %s alive: %w", l.key, err)
	}
	var written []byte // on this lease
	var last time.Time
	var wait <-chan time.Time
	for {
		l.mu.Lock()
		rec := l.rec
		l.mu.Unlock()
		if rec != nil && !bytes.Equal(rec, written) && wait == nil {
			if d := l.MinInterval - time.Since(last); d > 0 && !last.IsZero() {
				wait = time.After(d)
			} else {
				pctx, cancel := context.WithTimeout(ctx, l.ttl)
				_, err := l.s.cli.Put(pctx, l.key, string(rec), clientv3.WithLease(lease.ID))
				cancel()
				if err != nil {
					return fmt.Errorf("write %s: %w", l.key, err)
				}
				written, last = rec, time.Now()
				l.mu.Lock()
				l.wrote = rec
				l.mu.Unlock()
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-ka:
			if !ok {
				return fmt.Errorf("lease %x of %s expired or etcd unreachable", lease.ID, l.key)
			}
		case <-l.kick:
		case <-wait:
			wait = nil
		}
	}
}
