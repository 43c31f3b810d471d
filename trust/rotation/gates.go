package rotation

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/meshfed/meshfed/internal/ctxtime"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
)

// Required lists the clusters a gate waits for: every joined cluster (clusters/) and every
// cluster with a heartbeat (alive/), minus the job's exclusions. A member without a
// heartbeat is unreachable: it blocks the gate (it never counts as consent) until it acks
// or an operator excludes it.
func (j *Job) required(ctx context.Context, r *records.Rotation) (members []string, alive map[string]bool, err error) {
	set := map[string]bool{}
	cl, _, _, err := store.List[records.Cluster](ctx, j.st, j.st.KS.Family(records.KindCluster))
	if err != nil {
		return nil, nil, err
	}
	for _, c := range cl {
		set[c.Value.Name] = true
	}
	al, _, _, err := store.List[records.Alive](ctx, j.st, j.st.KS.Family(records.KindAlive))
	if err != nil {
		return nil, nil, err
	}
	alive = map[string]bool{}
	for _, a := range al {
		set[a.Value.Cluster] = true
		alive[a.Value.Cluster] = true
	}
	for c := range set {
		if !r.IsExcluded(c) {
			members = append(members, c)
		}
	}
	sort.Strings(members)
	return members, alive, nil
}

// gate waits until every required cluster has acked seq with the digest bundles/<td> has
// at that sequence, printing who blocks (and recording it in the job for status).
func (j *Job) gate(ctx context.Context, it *store.Item[records.Rotation], seq uint64) error {
	deadline := j.deadline()
	var lastWaiting string
	for {
		bit, err := store.Get[records.Bundle](ctx, j.st, j.st.KS.Bundle(j.td))
		if err != nil {
			return fmt.Errorf("gate: %w", err)
		}
		if bit.Value.Sequence != seq {
			if it.Value.Phase == records.PhasePreflight {
				// The source published just before it saw the job (the bundle is not
				// locked yet): re-step, and preflight re-bases on the new sequence.
				return store.ErrConflict
			}
			return fmt.Errorf("gate: bundles/%s is at sequence %d, the job expects %d: someone wrote it behind the job's back (see `meshfed trust status`)", j.td, bit.Value.Sequence, seq)
		}
		members, alive, err := j.required(ctx, it.Value)
		if err != nil {
			return err
		}
		rs, err := j.rootSets(it.Value, bit.Value)
		if err != nil {
			return err
		}
		var waiting []string
		for _, c := range members {
			a, err := store.Get[records.Ack](ctx, j.st, j.st.KS.Ack(c, j.td))
			switch {
			case err == nil && (a.Value.Sequence > seq || (a.Value.Sequence == seq && a.Value.Digest == bit.Value.Digest)):
				w, err := j.istiodWaiting(ctx, c, a.Value, seq, rs)
				if err != nil {
					return err
				}
				if w != "" {
					waiting = append(waiting, c+": waiting for istiod of cluster "+c+": "+w)
				}
				continue
			case err != nil && !errors.Is(err, store.ErrNotFound):
				return err
			}
			why := "no ack yet"
			if err == nil {
				why = fmt.Sprintf("acked sequence %d", a.Value.Sequence)
			}
			if !alive[c] {
				why = "UNREACHABLE (no heartbeat), " + why + "; exclude it explicitly with --exclude " + c + " if it is gone"
			}
			waiting = append(waiting, c+": "+why)
		}
		if len(waiting) == 0 {
			if len(members) == 0 {
				j.printf("warning: no cluster is registered or alive; gate for sequence %d passes vacuously", seq)
			}
			j.recordWaiting(ctx, it, nil)
			return nil
		}
		if w := strings.Join(waiting, "; "); w != lastWaiting {
			j.printf("waiting for acks of sequence %d from %d of %d cluster(s): %s", seq, len(waiting), len(members), w)
			lastWaiting = w
			if err := j.recordWaiting(ctx, it, waiting); err != nil {
				return err
			}
		}
		if !deadline.IsZero() && j.cfg.Now().After(deadline) {
			return gateTimeout("acks of sequence %d missing from %s", seq, strings.Join(waiting, "; "))
		}
		if !ctxtime.Sleep(ctx, j.cfg.Poll) {
			return ctx.Err()
		}
		cur, err := store.Get[records.Rotation](ctx, j.st, it.Key)
		if err != nil {
			return err
		}
		if cur.ModRevision != it.ModRevision {
			return store.ErrConflict // an exclusion or abort arrived: re-step
		}
	}
}

// recordWaiting stores who blocks the gate (for `meshfed trust status`); it moves the
// record's mod revision, so it updates it in place.
func (j *Job) recordWaiting(ctx context.Context, it *store.Item[records.Rotation], waiting []string) error {
	if strings.Join(it.Value.Waiting, "\n") == strings.Join(waiting, "\n") {
		return nil
	}
	n := *it.Value
	n.Waiting = waiting
	n.UpdatedAt = j.cfg.Now().UTC()
	rev, err := j.st.Update(ctx, it.Key, &n, it.ModRevision)
	if err != nil {
		return err // a conflict re-steps the job
	}
	it.Value, it.ModRevision = &n, rev
	return nil
}
