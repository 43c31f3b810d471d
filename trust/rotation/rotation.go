package rotation

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/internal/actor"
	"github.com/meshfed/meshfed/internal/ctxtime"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/devca"
)

// DefaultSVIDLifetime is the drain wait when neither a flag nor the dev CA says otherwise
// (SPIRE's default X509-SVID TTL is one hour).
const DefaultSVIDLifetime = time.Hour

// Hooks are test failpoints: a non-nil error from Before stops the job just before the
// transition's transaction (side effects of the phase are done, the record is not moved);
// from After, just after it. Either looks to the job like a crash at that point.
type Hooks struct {
	Before func(from, to records.RotationPhase) error
	After  func(from, to records.RotationPhase) error
}

// Config of a job run (start, resume or abort).
type Config struct {
	Store       *store.Store
	TrustDomain string
	// NewCA is the new root (start only); NewCAKey its key, only when the dev CA issues.
	NewCA    *x509.Certificate
	NewCAKey crypto.Signer
	// DevCADir is the development CA directory (the issuer when NewCAKey is given).
	DevCADir string
	// SVIDLifetime is the longest SVID lifetime (default: the dev CA's TTL, else 1 h).
	SVIDLifetime time.Duration
	// MinValidity is how long the new root must stay valid after the job's expected end.
	MinValidity time.Duration
	// Exclude lists clusters that do not count at the gates (recorded in the job).
	Exclude []string
	// Actor names who runs the job (recorded), as internal/actor names it; default
	// actor.Of("") (the local account and host).
	Actor string
	// Out receives progress lines (nil: discarded).
	Out io.Writer
	Log *slog.Logger
	// Poll paces gate checks (default 1 s).
	Poll time.Duration
	// GateTimeout bounds one wait (acks, confirmation, drain); 0 waits forever. A timed-out
	// job stays in its phase and resumes later.
	GateTimeout time.Duration
	// Now is the clock (tests); default time.Now.
	Now   func() time.Time
	Hooks Hooks
}

// Errors a caller acts on.
var (
	ErrJobRunning   = errors.New("a rotation job is already running for this trust domain")
	ErrNoJob        = errors.New("no rotation job for this trust domain")
	ErrNotAbortable = errors.New("the old root is already removed: the job can no longer be aborted")
	ErrGateTimeout  = errors.New("gate not passed before --gate-timeout")
)

// Job runs one trust domain's rotation.
type Job struct {
	cfg    Config
	st     *store.Store
	td     string
	holder string
	out    io.Writer
}

func newJob(cfg Config) (*Job, error) {
	if cfg.Store == nil {
		return nil, errors.New("rotation: no store")
	}
	if _, err := trust.ParseTrustDomain(cfg.TrustDomain); err != nil {
		return nil, fmt.Errorf("--trust-domain: %w", err)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MinValidity <= 0 {
		cfg.MinValidity = 24 * time.Hour
	}
	host, _ := os.Hostname()
	if cfg.Actor == "" {
		cfg.Actor = actor.Of("")
	}
	return &Job{cfg: cfg, st: cfg.Store, td: cfg.TrustDomain, holder: host + "/" + strconv.Itoa(os.Getpid()), out: cfg.Out}, nil
}

func (j *Job) printf(format string, args ...any) {
	fmt.Fprintf(j.out, "%s rotation %s: %s\n", j.cfg.Now().UTC().Format("15:04:05"), j.td, fmt.Sprintf(format, args...))
}

// Start creates a job moving the trust domain to cfg.NewCA and runs it to the end (or
// until a gate times out or ctx ends; then resume it).
func Start(ctx context.Context, cfg Config) (*records.Rotation, error) {
	j, err := newJob(cfg)
	if err != nil {
		return nil, err
	}
	if err := j.create(ctx); err != nil {
		return nil, err
	}
	return j.run(ctx)
}

// ErrAlreadyDone: the trust domain already rotated to the new root (Ensure did nothing).
var ErrAlreadyDone = errors.New("already rotated to this root")

// Ensure is what a schedule runs with the same arguments every time: it resumes the job
// if one runs towards cfg.NewCA, does nothing (ErrAlreadyDone) if the trust domain's last
// job already moved to it, and starts a job otherwise. A running job towards another root
// is an error.
func Ensure(ctx context.Context, cfg Config) (*records.Rotation, error) {
	j, err := newJob(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.NewCA == nil {
		return nil, errors.New("--new-ca: give the new root certificate (PEM)")
	}
	fp := trust.Fingerprint(cfg.NewCA)
	it, err := store.Get[records.Rotation](ctx, j.st, j.st.KS.Rotation(j.td))
	switch {
	case err == nil && !it.Value.Phase.Terminal():
		if it.Value.NewRootFingerprint != fp {
			return nil, fmt.Errorf("%w: job %s rotates to %s, not to --new-ca %s; finish or abort it first", ErrJobRunning, it.Value.ID, it.Value.NewRootFingerprint, fp)
		}
		j.printf("job %s towards this root is in phase %s: resuming", it.Value.ID, it.Value.Phase)
		return Resume(ctx, cfg)
	case err == nil && it.Value.Phase == records.PhaseDone && it.Value.NewRootFingerprint == fp:
		j.printf("job %s already rotated to %s (%s): nothing to do", it.Value.ID, fp, it.Value.UpdatedAt.Format(time.RFC3339))
		return it.Value, ErrAlreadyDone
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	return Start(ctx, cfg)
}

// Resume runs the existing job of the trust domain from its recorded phase. Exclusions in
// cfg are added to the job first.
func Resume(ctx context.Context, cfg Config) (*records.Rotation, error) {
	j, err := newJob(cfg)
	if err != nil {
		return nil, err
	}
	if len(cfg.Exclude) > 0 {
		if err := j.exclude(ctx, cfg.Exclude); err != nil {
			return nil, err
		}
	}
	return j.run(ctx)
}

// Abort asks the running job to abort and drives the abort to its end.
func Abort(ctx context.Context, cfg Config) (*records.Rotation, error) {
	j, err := newJob(cfg)
	if err != nil {
		return nil, err
	}
	_, err = j.modify(ctx, func(r *records.Rotation) error {
		if r.Phase.Terminal() {
			return fmt.Errorf("job %s already ended (%s)", r.ID, r.Phase)
		}
		if r.AbortRequested {
			return nil
		}
		if !r.Phase.Abortable() {
			return fmt.Errorf("job %s is in phase %s: %w; let it finish, then rotate again to go back (forward-only)", r.ID, r.Phase, ErrNotAbortable)
		}
		r.AbortRequested, r.AbortRequestedBy = true, j.cfg.Actor
		return nil
	})
	if err != nil {
		return nil, err
	}
	j.printf("abort requested by %s", j.cfg.Actor)
	return j.run(ctx)
}

// ConfirmIssuer records the operator's confirmation that the external issuer now signs
// with the new root (phase switch-issuer) or, during an abort, with the old one again
// (abort-switch-back). The running job, or the next resume, continues from there.
func ConfirmIssuer(ctx context.Context, cfg Config) (*records.Rotation, error) {
	j, err := newJob(cfg)
	if err != nil {
		return nil, err
	}
	return j.modify(ctx, func(r *records.Rotation) error {
		if r.Phase != records.PhaseSwitchIssuer && r.Phase != records.PhaseAbortSwitchBack {
			return fmt.Errorf("job %s is in phase %s: there is no issuer switch to confirm (only in %s or %s)", r.ID, r.Phase, records.PhaseSwitchIssuer, records.PhaseAbortSwitchBack)
		}
		if r.Issuer != records.IssuerExternal {
			return fmt.Errorf("job %s uses the dev CA, which switches itself", r.ID)
		}
		r.ConfirmIssuerFor, r.IssuerConfirmedBy = r.Phase, j.cfg.Actor
		if r.Phase == records.PhaseSwitchIssuer {
			r.IssuerSwitchedAt = j.cfg.Now().UTC()
		} else {
			r.IssuerRevertedAt = j.cfg.Now().UTC()
		}
		return nil
	})
}

func (j *Job) exclude(ctx context.Context, clusters []string) error {
	_, err := j.modify(ctx, func(r *records.Rotation) error {
		for _, c := range clusters {
			if !r.IsExcluded(c) {
				r.Excluded = append(r.Excluded, records.Exclusion{Cluster: c, By: j.cfg.Actor, At: j.cfg.Now().UTC()})
				j.printf("cluster %s excluded from the gates by %s (recorded in the job)", c, j.cfg.Actor)
			}
		}
		return nil
	})
	return err
}

// modify changes the job record in a compare-on-mod-revision transaction (retried on
// conflict).
func (j *Job) modify(ctx context.Context, fn func(*records.Rotation) error) (*records.Rotation, error) {
	for range 10 {
		it, err := store.Get[records.Rotation](ctx, j.st, j.st.KS.Rotation(j.td))
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("%w %s: start one with --new-ca", ErrNoJob, j.td)
		}
		if err != nil {
			return nil, err
		}
		r := *it.Value
		if err := fn(&r); err != nil {
			return nil, err
		}
		r.UpdatedAt = j.cfg.Now().UTC()
		_, err = j.st.Update(ctx, it.Key, &r, it.ModRevision)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		return &r, err
	}
	return nil, fmt.Errorf("rotation %s: %w ten times; try again", j.td, store.ErrConflict)
}

func (j *Job) create(ctx context.Context) error {
	nc := j.cfg.NewCA
	if nc == nil {
		return errors.New("--new-ca: give the new root certificate (PEM)")
	}
	issuer := records.IssuerExternal
	if j.cfg.NewCAKey != nil {
		issuer = records.IssuerDev
		if j.cfg.DevCADir == "" {
			return errors.New("--new-ca-key is for the dev CA: give --dev-ca-dir too")
		}
		if err := devca.CheckKeyPair(nc, j.cfg.NewCAKey); err != nil {
			return err
		}
	}
	if err := j.checkNewRoot(nc, j.lifetimeFor(issuer)); err != nil {
		return err
	}
	bit, err := store.Get[records.Bundle](ctx, j.st, j.st.KS.Bundle(j.td))
	if err != nil {
		return fmt.Errorf("read the current bundle of %s: %w (is its cluster's federation service publishing it?)", j.td, err)
	}
	cur, err := trust.FromRecord(bit.Value, j.cfg.Now())
	if err != nil {
		return fmt.Errorf("the current bundle of %s does not validate: %w", j.td, err)
	}
	if bit.Value.Lock != nil {
		return fmt.Errorf("%w: bundles/%s is locked by job %s; use --resume or --abort", ErrJobRunning, j.td, bit.Value.Lock.Job)
	}
	newFP := trust.Fingerprint(nc)
	var old []*x509.Certificate
	for _, r := range cur.X509Roots {
		if trust.Fingerprint(r) != newFP {
			old = append(old, r)
		}
	}
	if len(old) == 0 {
		return fmt.Errorf("the bundle of %s holds no root other than --new-ca: nothing to rotate from", j.td)
	}
	now := j.cfg.Now().UTC()
	rot := &records.Rotation{
		TrustDomain: j.td, ID: "rot-" + now.Format("20060102t150405"), Phase: records.PhasePreflight,
		OldRoots: string(trust.CertsPEM(old)), NewRoot: string(trust.CertsPEM([]*x509.Certificate{nc})), NewRootFingerprint: newFP,
		Issuer: issuer, SVIDLifetimeMillis: j.lifetimeFor(issuer).Milliseconds(), BaseSequence: bit.Value.Sequence,
		Holder: j.holder, StartedBy: j.cfg.Actor, StartedAt: now, UpdatedAt: now,
		History: []records.Progress{{Phase: records.PhasePreflight, At: now, Note: "created by " + j.cfg.Actor}},
	}
	if issuer == records.IssuerDev {
		rot.DevCADir = j.cfg.DevCADir
		ca, err := devca.Open(j.cfg.DevCADir, j.td)
		if err != nil {
			return err
		}
		iss, err := ca.Issuer()
		if err != nil {
			return err
		}
		rot.OldIssuerFingerprint = trust.Fingerprint(iss)
	}
	for _, c := range j.cfg.Exclude {
		rot.Excluded = append(rot.Excluded, records.Exclusion{Cluster: c, By: j.cfg.Actor, At: now})
	}
	key := j.st.KS.Rotation(j.td)
	prev, err := store.Get[records.Rotation](ctx, j.st, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		_, err = j.st.Create(ctx, key, rot)
	case err != nil:
		return err
	case !prev.Value.Phase.Terminal():
		return fmt.Errorf("%w: job %s is in phase %s; use --resume or --abort", ErrJobRunning, prev.Value.ID, prev.Value.Phase)
	default:
		if prev.Value.ID == rot.ID {
			rot.ID += "-2"
		}
		_, err = j.st.Update(ctx, key, rot, prev.ModRevision)
	}
	if errors.Is(err, store.ErrExists) || errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("%w (another job was created at the same moment)", ErrJobRunning)
	}
	if err != nil {
		return err
	}
	j.printf("job %s created: %d old root(s) → new root %s, issuer %s, SVID lifetime %s, bundle sequence %d",
		rot.ID, len(old), newFP, issuer, j.lifetimeFor(issuer), rot.BaseSequence)
	if issuer == records.IssuerDev {
		// The dev CA keeps the key from now on (never etcd), so a resume needs no key. Its
		// source cannot publish the extra root: the job exists, so the publisher refuses.
		ca, err := devca.Open(j.cfg.DevCADir, j.td)
		if err != nil {
			return err
		}
		if err := ca.AddRoot(nc, j.cfg.NewCAKey); err != nil {
			return fmt.Errorf("add the new root to the dev CA: %w (resume with --new-ca-key)", err)
		}
	}
	return nil
}

func (j *Job) lifetimeFor(issuer string) time.Duration {
	if j.cfg.SVIDLifetime > 0 {
		return j.cfg.SVIDLifetime
	}
	if issuer == records.IssuerDev {
		if ca, err := devca.Open(j.cfg.DevCADir, j.td); err == nil {
			if ttl, err := ca.SVIDTTL(); err == nil {
				return ttl
			}
		}
	}
	return DefaultSVIDLifetime
}

// checkNewRoot: a CA certificate, valid now and past the job's expected end (drain plus
// MinValidity), and of this trust domain when it carries a SPIFFE ID.
func (j *Job) checkNewRoot(c *x509.Certificate, lifetime time.Duration) error {
	b, err := trust.Parse(j.td, trust.CertsPEM([]*x509.Certificate{c}), trust.ParseOptions{Now: j.cfg.Now()})
	if err != nil {
		return fmt.Errorf("--new-ca: %w", err)
	}
	_ = b
	end := j.cfg.Now().Add(lifetime + j.cfg.MinValidity)
	if c.NotAfter.Before(end) {
		return fmt.Errorf("--new-ca expires %s, before the job's end plus %s (%s): use a root that lives longer", c.NotAfter.UTC().Format(time.RFC3339), j.cfg.MinValidity, end.UTC().Format(time.RFC3339))
	}
	for _, u := range c.URIs {
		if u.Scheme == "spiffe" && u.Host != j.td {
			return fmt.Errorf("--new-ca carries %s, not of trust domain %s", u, j.td)
		}
	}
	return nil
}

// run drives the job from its recorded phase to a terminal one.
func (j *Job) run(ctx context.Context) (*records.Rotation, error) {
	key := j.st.KS.Rotation(j.td)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		it, err := store.Get[records.Rotation](ctx, j.st, key)
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("%w %s: start one with --new-ca", ErrNoJob, j.td)
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
		if r.Issuer == records.IssuerDev {
			ca, err := devca.Open(r.DevCADir, j.td)
			if err != nil {
				return err
			}
			for _, c := range j.oldRoots(r) {
				if err := ca.RemoveRoot(trust.Fingerprint(c)); err != nil {
					return err
				}
			}
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
		if r.Issuer == records.IssuerDev {
			ca, err := devca.Open(r.DevCADir, j.td)
			if err != nil {
				return err
			}
			if err := ca.RemoveRoot(r.NewRootFingerprint); err != nil {
				return err
			}
		}
		return j.unlockTo(ctx, it, records.PhaseAborted, "every cluster trusts the old roots only again")
	}
	return fmt.Errorf("job %s: unknown phase %q", r.ID, r.Phase)
}

func (j *Job) preflight(ctx context.Context, it *store.Item[records.Rotation]) error {
	r := it.Value
	if r.AbortRequested {
		if r.Issuer == records.IssuerDev {
			if ca, err := devca.Open(r.DevCADir, j.td); err == nil {
				if err := ca.RemoveRoot(r.NewRootFingerprint); err != nil {
					return err
				}
			}
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
				return fmt.Errorf("preflight: the dev CA in %s lacks the new root: resume with --new-ca-key again", r.DevCADir)
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
			return fmt.Errorf("%w: still waiting for the issuer confirmation", ErrGateTimeout)
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
			return fmt.Errorf("%w: %s at %s", ErrGateTimeout, what, until.UTC().Format(time.RFC3339))
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
		var waiting []string
		for _, c := range members {
			a, err := store.Get[records.Ack](ctx, j.st, j.st.KS.Ack(c, j.td))
			switch {
			case err == nil && (a.Value.Sequence > seq || (a.Value.Sequence == seq && a.Value.Digest == bit.Value.Digest)):
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
			return fmt.Errorf("%w: acks of sequence %d missing from %s", ErrGateTimeout, seq, strings.Join(waiting, "; "))
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
