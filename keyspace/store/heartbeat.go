package store

import (
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/internal/ctxtime"
	"github.com/meshfed/meshfed/keyspace/records"
)

// DefaultHeartbeatTTL is the lease TTL of alive/<cluster>.
const DefaultHeartbeatTTL = 10 * time.Second

// Heartbeat keeps alive/<cluster> on its own lease. Only that one key is attached to the
// lease (etcd puts under a lease slow down as the lease's key count grows, and exports
// must outlive the heartbeat: a lost heartbeat makes a cluster stale, not gone).
type Heartbeat struct {
	s        *Store
	rec      records.Alive
	ttl      time.Duration
	mu       sync.Mutex
	alive    bool
	lastErr  error
	leaseID  clientv3.LeaseID
	OnChange func(alive bool, err error)
}

// NewHeartbeat prepares the heartbeat of cluster; instance names this process.
func (s *Store) NewHeartbeat(cluster, instance string, ttl time.Duration) *Heartbeat {
	if ttl <= 0 {
		ttl = DefaultHeartbeatTTL
	}
	return &Heartbeat{s: s, ttl: ttl, rec: records.Alive{Cluster: cluster, Instance: instance, TTL: int64(ttl / time.Second)}}
}

// Alive reports whether the heartbeat key is currently held, and the last error.
func (h *Heartbeat) Alive() (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.alive, h.lastErr
}

func (h *Heartbeat) set(alive bool, err error) {
	h.mu.Lock()
	changed := h.alive != alive
	h.alive, h.lastErr = alive, err
	h.mu.Unlock()
	if changed && h.OnChange != nil {
		h.OnChange(alive, err)
	}
}

// Run holds the heartbeat until ctx ends. On a lost lease (etcd unreachable longer than the
// TTL) it grants a new one and writes the key again. On exit it does NOT revoke the lease:
// a restarted process takes the key over before the TTL ends, so a restart never makes the
// cluster look stale; a process that is really gone expires after the TTL.
func (h *Heartbeat) Run(ctx context.Context) error {
	key := h.s.KS.Alive(h.rec.Cluster)
	backoff := 200 * time.Millisecond
	h.rec.Since = time.Now().UTC()
	for ctx.Err() == nil {
		err := h.hold(ctx, key)
		if ctx.Err() != nil {
			break
		}
		h.set(false, err)
		h.s.log.Warn("heartbeat lost; re-acquiring", "cluster", h.rec.Cluster, "err", err)
		if !ctxtime.Sleep(ctx, backoff) {
			break
		}
		backoff = nextBackoff(backoff, 2*time.Second)
	}
	// This process no longer keeps the lease alive (the key itself lives out its TTL), and
	// a later Run (a new leadership term) reports holding it again.
	h.set(false, nil)
	return nil
}

func (h *Heartbeat) hold(ctx context.Context, key string) error {
	gctx, cancel := context.WithTimeout(ctx, h.ttl)
	lease, err := h.s.cli.Grant(gctx, int64(h.ttl/time.Second))
	cancel()
	if err != nil {
		return fmt.Errorf("grant heartbeat lease: %w", err)
	}
	b, err := records.Encode(&h.rec)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, h.ttl)
	// Our own key, written whole: the write does not depend on a read.
	_, err = h.s.cli.Put(pctx, key, string(b), clientv3.WithLease(lease.ID))
	cancel()
	if err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	h.mu.Lock()
	h.leaseID = lease.ID
	h.mu.Unlock()
	ka, err := h.s.cli.KeepAlive(ctx, lease.ID)
	if err != nil {
		return fmt.Errorf("keep heartbeat lease alive: %w", err)
	}
	h.set(true, nil)
	for range ka {
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("heartbeat lease %x expired or etcd unreachable", lease.ID)
}
