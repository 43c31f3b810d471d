package rotation

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/internal/ctxtime"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/devca"
)

// run drives the job from its recorded phase to a terminal one.
func (j *Job) run(ctx context.Context) (*records.Rotation, error) {
	key := j.st.KS.Rotation(j.td)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		it, err := store.Get[records.Rotation](ctx, j.st, key)
		if errors.Is(err, store.ErrNotFound) {
			return nil, causeErr(ErrNoJob, "%v %s: start one with %s", ErrNoJob, j.td, validate.Ref("NewCA"))
		}
		if err != nil {
			return nil, err
		}
		if it.Value.Phase.Terminal() {
			j.printf("job %s %s", it.Value.ID, it.Value.Phase)
			return it.Value, nil
		}
		err = j.step(ctx, it)
		if errors.Is(err, store.ErrConflict) {
			continue // someone else moved the job (another runner, --abort, --exclude): re-read
		}
		if err != nil {
			return it.Value, err
		}
	}
}

func (j *Job) step(ctx context.Context, it *store.Item[records.Rotation]) error {
	r := it.Value
	switch r.Phase {
	case records.PhasePreflight:
		return j.preflight(ctx, it)
	case records.PhaseWaitAcksBoth:
		if r.AbortRequested {
			return j.publishOld(ctx, it)
		}
		if err := j.gate(ctx, it, r.BothSequence); err != nil {
			return err
		}
		return j.transition(ctx, it, records.PhaseSwitchIssuer, "every cluster trusts old and new roots", nil, nil)
	case records.PhaseSwitchIssuer:
		return j.switchIssuer(ctx, it)
	case records.PhaseDrain:
		if r.AbortRequested {
			return j.transition(ctx, it, records.PhaseAbortSwitchBack, "abort: issuance goes back to the old root first", nil, nil)
		}
		if err := j.waitUntil(ctx, it, r.IssuerSwitchedAt.Add(r.SVIDLifetime()), "the last SVID of the old root expires"); err != nil {
			return err
		}
		return j.publishNewOnly(ctx, it)
	case records.PhaseWaitAcksNew:
		if err := j.gate(ctx, it, r.NewSequence); err != nil {
			return err
		}
		var old []string
		for _, c := range j.oldRoots(r) {
			old = append(old, trust.Fingerprint(c))
		}
		if err := j.removeDevRoots(r, old...); err != nil {
			return err
		}
		return j.unlockTo(ctx, it, records.PhaseDone, "every cluster trusts the new root only")
	case records.PhaseAbortSwitchBack:
		return j.switchBack(ctx, it)
	case records.PhaseAbortDrain:
		if err := j.waitUntil(ctx, it, r.IssuerRevertedAt.Add(r.SVIDLifetime()), "the last SVID of the new root expires"); err != nil {
			return err
		}
		return j.publishOld(ctx, it)
	case records.PhaseAbortWaitAcks:
		if err := j.gate(ctx, it, r.AbortSequence); err != nil {
			return err
		}
		if err := j.removeDevRoots(r, r.NewRootFingerprint); err != nil {
			return err
		}
		return j.unlockTo(ctx, it, records.PhaseAborted, "every cluster trusts the old roots only again")
	}
	return fmt.Errorf("job %s: unknown phase %q", r.ID, r.Phase)
}

// removeDevRoots takes the roots with these fingerprints out of the development CA when
// the job's issuer is the dev CA (an external issuer's roots are the operator's). A dev CA
// that does not open is an *openDevCAError.
func (j *Job) removeDevRoots(r *records.Rotation, fingerprints ...string) error {
	if r.Issuer != records.IssuerDev {
		return nil
	}
	ca, err := devca.Open(r.DevCADir, j.td)
	if err != nil {
		return &openDevCAError{err}
	}
	for _, fp := range fingerprints {
		if err := ca.RemoveRoot(fp); err != nil {
			return err
		}
	}
	return nil
}

// openDevCAError is a development CA that removeDevRoots could not open.
type openDevCAError struct{ error }

func (e *openDevCAError) Unwrap() error { return e.error }

func (j *Job) preflight(ctx context.Context, it *store.Item[records.Rotation]) error {
	r := it.Value
	if r.AbortRequested {
		// Nothing was published yet: a dev CA that does not open holds nothing to undo.
		var open *openDevCAError
		if err := j.removeDevRoots(r, r.NewRootFingerprint); err != nil && !errors.As(err, &open) {
			return err
		}
		return j.transition(ctx, it, records.PhaseAborted, "aborted before anything was published", nil, nil)
	}
	newRoot, err := j.newRoot(r)
	if err != nil {
		return err
	}
	if err := j.checkNewRoot(newRoot, r.SVIDLifetime()); err != nil {
		return err
	}
	bit, err := store.Get[records.Bundle](ctx, j.st, j.st.KS.Bundle(j.td))
	if err != nil {
		return fmt.Errorf("preflight: %w", err)
	}
	if l := bit.Value.Lock; l != nil && l.Job != r.ID {
		return fmt.Errorf("preflight: bundles/%s is locked by another job %s", j.td, l.Job)
	}
	if bit.Value.Sequence != r.BaseSequence {
		// The source published meanwhile: start from what is published now.
		cur, err := trust.FromRecord(bit.Value, j.cfg.Now())
		if err != nil {
			return fmt.Errorf("preflight: current bundle: %w", err)
		}
		var old []*x509.Certificate
		for _, c := range cur.X509Roots {
			if trust.Fingerprint(c) != r.NewRootFingerprint {
				old = append(old, c)
			}
		}
		if len(old) == 0 {
			return fmt.Errorf("preflight: the bundle of %s now holds only the new root", j.td)
		}
		return j.transition(ctx, it, records.PhasePreflight, fmt.Sprintf("bundle moved to sequence %d meanwhile: re-based", bit.Value.Sequence), func(n *records.Rotation) {
			n.BaseSequence, n.OldRoots = bit.Value.Sequence, string(trust.CertsPEM(old))
		}, nil)
	}
	if err := j.gate(ctx, it, r.BaseSequence); err != nil {
		return err
	}
	if r.Issuer == records.IssuerDev {
		ca, err := devca.Open(r.DevCADir, j.td)
		if err != nil {
			return err
		}
		if !contains(mustRoots(ca), r.NewRootFingerprint) {
			if j.cfg.NewCAKey == nil {
				return fieldErr("", "preflight: the dev CA in %s lacks the new root: resume with %s again", r.DevCADir, validate.Ref("NewCAKey"))
			}
			if err := ca.AddRoot(newRoot, j.cfg.NewCAKey); err != nil {
				return err
			}
		}
	}
	both := append(j.oldRoots(r), newRoot)
	return j.publish(ctx, it, bit, both, r.BaseSequence+1, records.PhaseWaitAcksBoth, "published old+new roots", func(n *records.Rotation) {
		n.BothSequence = r.BaseSequence + 1
	})
}

func (j *Job) switchIssuer(ctx context.Context, it *store.Item[records.Rotation]) error {
	r := it.Value
	if r.Issuer == records.IssuerDev {
		ca, err := devca.Open(r.DevCADir, j.td)
		if err != nil {
			return err
		}
		if r.AbortRequested {
			iss, err := ca.Issuer()
			if err != nil {
				return err
			}
			if trust.Fingerprint(iss) == r.NewRootFingerprint {
				// The switch happened before a crash: SVIDs of the new root may exist.
				return j.transition(ctx, it, records.PhaseAbortSwitchBack, "abort: issuance had moved; moving it back", nil, nil)
			}
			return j.publishOld(ctx, it)
		}
		if err := ca.SwitchIssuer(r.NewRootFingerprint); err != nil {
			return err
		}
		return j.transition(ctx, it, records.PhaseDrain, "dev CA issues from the new root", func(n *records.Rotation) {
			n.IssuerSwitchedAt = j.cfg.Now().UTC()
		}, nil)
	}
	if r.AbortRequested {
		// An external issuer may have been switched without a confirmation yet: the
		// operator confirms where issuance is before anything is removed.
		return j.transition(ctx, it, records.PhaseAbortSwitchBack, "abort: confirm issuance is on the old root", nil, nil)
	}
	if r.ConfirmIssuerFor == records.PhaseSwitchIssuer {
		return j.transition(ctx, it, records.PhaseDrain, "issuer switch confirmed by "+r.IssuerConfirmedBy, nil, nil)
	}
	return j.waitConfirm(ctx, it, fmt.Sprintf(
		"PAUSED: every cluster trusts the new root. Switch the issuer of %s to it now (e.g. SPIRE UpstreamAuthority, cert-manager Issuer), then run:\n    meshfed trust rotate --trust-domain %s --confirm-issuer-switched",
		j.td, j.td))
}

func (j *Job) switchBack(ctx context.Context, it *store.Item[records.Rotation]) error {
	r := it.Value
	if r.Issuer == records.IssuerDev {
		ca, err := devca.Open(r.DevCADir, j.td)
		if err != nil {
			return err
		}
		if err := ca.SwitchIssuer(r.OldIssuerFingerprint); err != nil {
			return err
		}
		return j.transition(ctx, it, records.PhaseAbortDrain, "dev CA issues from the old root again", func(n *records.Rotation) {
			n.IssuerRevertedAt = j.cfg.Now().UTC()
		}, nil)
	}
	if r.ConfirmIssuerFor == records.PhaseAbortSwitchBack {
		return j.transition(ctx, it, records.PhaseAbortDrain, "issuer switch back confirmed by "+r.IssuerConfirmedBy, nil, nil)
	}
	return j.waitConfirm(ctx, it, fmt.Sprintf(
		"PAUSED (abort): make sure the issuer of %s signs with the OLD root, then run:\n    meshfed trust rotate --trust-domain %s --confirm-issuer-switched",
		j.td, j.td))
}

// waitConfirm prints the operator's instructions and waits for the record to change (a
// confirmation, an abort or an exclusion all move the job on).
func (j *Job) waitConfirm(ctx context.Context, it *store.Item[records.Rotation], msg string) error {
	j.printf("%s", msg)
	deadline := j.deadline()
	for {
		if !ctxtime.Sleep(ctx, j.cfg.Poll) {
			return ctx.Err()
		}
		cur, err := store.Get[records.Rotation](ctx, j.st, it.Key)
		if err != nil {
			return err
		}
		if cur.ModRevision != it.ModRevision {
			return store.ErrConflict // re-read and re-step
		}
		if !deadline.IsZero() && j.cfg.Now().After(deadline) {
			return gateTimeout("still waiting for the issuer confirmation")
		}
	}
}

func (j *Job) deadline() time.Time {
	if j.cfg.GateTimeout <= 0 {
		return time.Time{}
	}
	return j.cfg.Now().Add(j.cfg.GateTimeout)
}

// waitUntil waits for a point in time recorded in the job (so a resumed job waits only
// the rest), printing what it waits for; an abort request or any other change of the record
// interrupts it.
func (j *Job) waitUntil(ctx context.Context, it *store.Item[records.Rotation], until time.Time, what string) error {
	if left := until.Sub(j.cfg.Now()); left > 0 {
		j.printf("waiting %s until %s (%s)", left.Round(time.Second), what, until.UTC().Format(time.RFC3339))
	}
	deadline := j.deadline()
	for j.cfg.Now().Before(until) {
		if !deadline.IsZero() && j.cfg.Now().After(deadline) {
			return gateTimeout("%s at %s", what, until.UTC().Format(time.RFC3339))
		}
		if !ctxtime.Sleep(ctx, min(j.cfg.Poll, until.Sub(j.cfg.Now())+time.Millisecond)) {
			return ctx.Err()
		}
		cur, err := store.Get[records.Rotation](ctx, j.st, it.Key)
		if err != nil {
			return err
		}
		if cur.ModRevision != it.ModRevision && cur.Value.AbortRequested != it.Value.AbortRequested {
			return store.ErrConflict
		}
	}
	return nil
}
