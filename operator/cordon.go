package operator

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
)

// Cordon is a live drill key on its own lease.
type Cordon struct {
	Key     string
	Lease   clientv3.LeaseID
	cli     *clientv3.Client
	lost    chan struct{}
	stopKA  context.CancelFunc
	revoked bool
}

// StartCordon writes drills/<id> attached to a new lease of ttl and keeps the lease alive
// until Lift (or until the process dies: the key then expires within ttl).
func StartCordon(ctx context.Context, st *store.Store, d *records.Drill, ttl time.Duration) (*Cordon, error) {
	cli := st.Client()
	lease, err := cli.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return nil, fmt.Errorf("grant drill lease: %w", err)
	}
	key := st.KS.Drill(d.ID)
	if _, err := st.Create(ctx, key, d, clientv3.WithLease(lease.ID)); err != nil {
		_, _ = cli.Revoke(context.WithoutCancel(ctx), lease.ID)
		if store.IsPermissionDenied(err) {
			return nil, needsOperator(err, "drills are written", true)
		}
		return nil, err
	}
	// The keep-alive must not end with the caller's context (Ctrl-C): Lift revokes.
	kctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ka, err := cli.KeepAlive(kctx, lease.ID)
	if err != nil {
		cancel()
		_, _ = cli.Revoke(context.WithoutCancel(ctx), lease.ID)
		return nil, fmt.Errorf("keep drill lease alive: %w", err)
	}
	c := &Cordon{Key: key, Lease: lease.ID, cli: cli, lost: make(chan struct{}), stopKA: cancel}
	go func() {
		for range ka {
		}
		close(c.lost)
	}()
	return c, nil
}

// Lost is closed when the keep-alive ends (after Lift, or when the lease was lost).
func (c *Cordon) Lost() <-chan struct{} { return c.lost }

// Lift revokes the lease, which deletes the cordon key at once.
func (c *Cordon) Lift(ctx context.Context) error {
	if c.revoked {
		return nil
	}
	c.revoked = true
	c.stopKA()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := c.cli.Revoke(rctx, c.Lease); err != nil {
		return fmt.Errorf("revoke drill lease (the cordon %s ends by itself within the lease TTL): %w", c.Key, err)
	}
	return nil
}
