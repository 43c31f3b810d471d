package store

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/keyspace/records"
)

// Write is one conditional write of a batch: put Record at Key (or delete Key when Record
// is nil) only if the key's mod revision is still ModRevision (0: the key must not exist).
type Write struct {
	Key         string
	Record      records.Record
	ModRevision int64
}

// MaxBatch is the most writes one transaction carries (etcd's default limit is 128 ops).
const MaxBatch = 100

// CommitBatch applies up to MaxBatch writes in one transaction: all or none. It returns
// the revision of the transaction, or ErrConflict when any write's compare failed (read
// again and retry).
func (s *Store) CommitBatch(ctx context.Context, ws []Write) (int64, error) {
	if len(ws) == 0 {
		return 0, nil
	}
	if len(ws) > MaxBatch {
		return 0, fmt.Errorf("batch of %d writes: at most %d", len(ws), MaxBatch)
	}
	cmps := make([]clientv3.Cmp, 0, len(ws))
	ops := make([]clientv3.Op, 0, len(ws))
	for _, w := range ws {
		if w.ModRevision == 0 {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(w.Key), "=", 0))
		} else {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(w.Key), "=", w.ModRevision))
		}
		if w.Record == nil {
			ops = append(ops, clientv3.OpDelete(w.Key))
			continue
		}
		b, err := records.Encode(w.Record)
		if err != nil {
			return 0, fmt.Errorf("write %s: %w", w.Key, err)
		}
		ops = append(ops, clientv3.OpPut(w.Key, string(b)))
	}
	r, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return 0, fmt.Errorf("batch of %d writes: %w", len(ws), err)
	}
	if !r.Succeeded {
		return 0, fmt.Errorf("batch of %d writes: %w", len(ws), ErrConflict)
	}
	return r.Header.Revision, nil
}
