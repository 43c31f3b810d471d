package rotation

import (
	"context"
	"crypto/x509"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/devca"
)

func (j *Job) newRoot(r *records.Rotation) (*x509.Certificate, error) {
	b, err := trust.Parse(j.td, []byte(r.NewRoot), trust.ParseOptions{Now: j.cfg.Now(), DropExpired: true})
	if err != nil || len(b.X509Roots) != 1 {
		return nil, fmt.Errorf("job %s: newRoot does not parse: %v", r.ID, err)
	}
	return b.X509Roots[0], nil
}

func (j *Job) oldRoots(r *records.Rotation) []*x509.Certificate {
	b, err := trust.Parse(j.td, []byte(r.OldRoots), trust.ParseOptions{Now: j.cfg.Now(), DropExpired: true, AllowEmpty: true})
	if err != nil {
		return nil
	}
	return b.X509Roots
}

func (j *Job) publishNewOnly(ctx context.Context, it *store.Item[records.Rotation]) error {
	r := it.Value
	nr, err := j.newRoot(r)
	if err != nil {
		return err
	}
	bit, err := store.Get[records.Bundle](ctx, j.st, j.st.KS.Bundle(j.td))
	if err != nil {
		return err
	}
	if bit.Value.Sequence != r.BothSequence {
		return fmt.Errorf("bundles/%s is at sequence %d, the job expects %d: someone wrote it behind the job's back", j.td, bit.Value.Sequence, r.BothSequence)
	}
	return j.publish(ctx, it, bit, []*x509.Certificate{nr}, r.BothSequence+1, records.PhaseWaitAcksNew, "published the new root only", func(n *records.Rotation) {
		n.NewSequence = r.BothSequence + 1
	})
}

// publishOld is the forward-only rollback: the old roots again, as a new sequence.
func (j *Job) publishOld(ctx context.Context, it *store.Item[records.Rotation]) error {
	r := it.Value
	bit, err := store.Get[records.Bundle](ctx, j.st, j.st.KS.Bundle(j.td))
	if err != nil {
		return err
	}
	if bit.Value.Sequence != r.BothSequence {
		return fmt.Errorf("bundles/%s is at sequence %d, the job expects %d: someone wrote it behind the job's back", j.td, bit.Value.Sequence, r.BothSequence)
	}
	seq := r.BothSequence + 1
	return j.publish(ctx, it, bit, j.oldRoots(r), seq, records.PhaseAbortWaitAcks, "abort: published the old roots again (forward-only)", func(n *records.Rotation) {
		n.AbortSequence = seq
	})
}

// publish moves the job to next and writes the bundle with roots at seq, holding the lock,
// in one transaction comparing both records' mod revisions.
func (j *Job) publish(ctx context.Context, it *store.Item[records.Rotation], bit *store.Item[records.Bundle], roots []*x509.Certificate, seq uint64, next records.RotationPhase, note string, mut func(*records.Rotation)) error {
	cur, err := trust.FromRecord(bit.Value, j.cfg.Now())
	if err != nil {
		return fmt.Errorf("current bundle: %w", err)
	}
	nb, err := cur.WithRoots(roots, trust.ParseOptions{Now: j.cfg.Now()})
	if err != nil {
		return err
	}
	rec, err := nb.WithMeta(seq, cur.RefreshHint).Record(bit.Value.Owner, j.cfg.Now())
	if err != nil {
		return err
	}
	rec.Lock = &records.Lock{Job: it.Value.ID, Holder: j.holder, Since: j.cfg.Now().UTC()}
	if bit.Value.Lock != nil && bit.Value.Lock.Job == it.Value.ID {
		rec.Lock.Since = bit.Value.Lock.Since
	}
	return j.transition(ctx, it, next, fmt.Sprintf("%s at sequence %d (digest %s)", note, seq, rec.Digest), mut, &bundleWrite{rec: rec, modRev: bit.ModRevision})
}

// unlockTo releases the lock (same sequence, same content) and ends the job.
func (j *Job) unlockTo(ctx context.Context, it *store.Item[records.Rotation], next records.RotationPhase, note string) error {
	bit, err := store.Get[records.Bundle](ctx, j.st, j.st.KS.Bundle(j.td))
	if err != nil {
		return err
	}
	rec := *bit.Value
	rec.Lock = nil
	return j.transition(ctx, it, next, note+"; lock released", func(n *records.Rotation) { n.Waiting = nil }, &bundleWrite{rec: &rec, modRev: bit.ModRevision})
}

type bundleWrite struct {
	rec    *records.Bundle
	modRev int64
}

// transition is one etcd transaction: the job record to next (compare on its mod revision)
// and, with bw, bundles/<td> (compare on its own).
func (j *Job) transition(ctx context.Context, it *store.Item[records.Rotation], next records.RotationPhase, note string, mut func(*records.Rotation), bw *bundleWrite) error {
	from := it.Value.Phase
	n := *it.Value
	n.Phase = next
	n.Holder = j.holder
	n.UpdatedAt = j.cfg.Now().UTC()
	if from != next {
		n.Waiting = nil
	}
	if mut != nil {
		mut(&n)
	}
	n.History = append(append([]records.Progress(nil), n.History...), records.Progress{Phase: next, At: n.UpdatedAt, Note: note})
	if len(n.History) > records.MaxRotationHistory {
		n.History = n.History[len(n.History)-records.MaxRotationHistory:]
	}
	rb, err := records.Encode(&n)
	if err != nil {
		return err
	}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(it.Key), "=", it.ModRevision)}
	ops := []clientv3.Op{clientv3.OpPut(it.Key, string(rb))}
	if bw != nil {
		bb, err := records.Encode(bw.rec)
		if err != nil {
			return err
		}
		bkey := j.st.KS.Bundle(j.td)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(bkey), "=", bw.modRev))
		ops = append(ops, clientv3.OpPut(bkey, string(bb)))
	}
	if h := j.cfg.Hooks.Before; h != nil {
		if err := h(from, next); err != nil {
			return err
		}
	}
	resp, err := j.st.Client().Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("rotation %s: %s → %s: %w", j.td, from, next, err)
	}
	if !resp.Succeeded {
		return store.ErrConflict
	}
	j.printf("%s → %s: %s", from, next, note)
	j.cfg.Log.Info("rotation transition", "trust_domain", j.td, "job", n.ID, "from", from, "to", next, "note", note)
	if h := j.cfg.Hooks.After; h != nil {
		if err := h(from, next); err != nil {
			return err
		}
	}
	return nil
}

func mustRoots(ca *devca.CA) []*x509.Certificate {
	r, _ := ca.Roots()
	return r
}

func contains(certs []*x509.Certificate, fp string) bool {
	for _, c := range certs {
		if trust.Fingerprint(c) == fp {
			return true
		}
	}
	return false
}
