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
	"strconv"
	"time"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/internal/actor"
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
	// IstiodSettle is how long a gate waits after every istiod of a cluster that feeds
	// istiod gives its proxies the bundle's roots (istiod's push of them to its proxies; no
	// ack of theirs is seen): default DefaultIstiodSettle, negative none.
	IstiodSettle time.Duration
	// Now is the clock (tests); default time.Now.
	Now   func() time.Time
	Hooks Hooks
}

// Errors a caller acts on.
var (
	ErrJobRunning   = errors.New("a rotation job is already running for this trust domain")
	ErrNoJob        = errors.New("no rotation job for this trust domain")
	ErrNotAbortable = errors.New("the old root is already removed: the job can no longer be aborted")
	ErrGateTimeout  = errors.New("gate not passed before the gate timeout")
)

// fieldErr is a problem with the Config field field, or, without one, a message that
// refers to Config fields with validate.Ref (errors name Config fields, not flags: a
// command maps them to its flags; it also names Resume and Abort, the entry points).
func fieldErr(field, format string, args ...any) error {
	return &validate.FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// causeErr is a message as fieldErr's, without a field, of the error cause (errors.Is and
// errors.As see it; the message says it).
func causeErr(cause error, format string, args ...any) error {
	return &validate.FieldError{Msg: fmt.Sprintf(format, args...), Err: cause}
}

// gateTimeout is ErrGateTimeout: format says which gate.
func gateTimeout(format string, args ...any) error {
	return causeErr(ErrGateTimeout, "gate not passed before %s: %s", validate.Ref("GateTimeout"), fmt.Sprintf(format, args...))
}

// Job runs one trust domain's rotation.
type Job struct {
	cfg    Config
	st     *store.Store
	td     string
	holder string
	out    io.Writer
	// istiodOK: when the job first saw every istiod of a cluster have a sequence's roots
	// ("<cluster>/<seq>"), the start of its settle window.
	istiodOK map[string]time.Time
}

func newJob(cfg Config) (*Job, error) {
	if cfg.Store == nil {
		return nil, errors.New("rotation: no store")
	}
	if _, err := trust.ParseTrustDomain(cfg.TrustDomain); err != nil {
		return nil, fieldErr("TrustDomain", "%v", err)
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
	switch {
	case cfg.IstiodSettle == 0:
		cfg.IstiodSettle = DefaultIstiodSettle
	case cfg.IstiodSettle < 0:
		cfg.IstiodSettle = 0
	}
	if cfg.MinValidity <= 0 {
		cfg.MinValidity = 24 * time.Hour
	}
	host, _ := os.Hostname()
	if cfg.Actor == "" {
		cfg.Actor = actor.Of("")
	}
	return &Job{cfg: cfg, st: cfg.Store, td: cfg.TrustDomain, holder: host + "/" + strconv.Itoa(os.Getpid()), out: cfg.Out, istiodOK: map[string]time.Time{}}, nil
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
		return nil, fieldErr("NewCA", "give the new root certificate (PEM)")
	}
	fp := trust.Fingerprint(cfg.NewCA)
	it, err := store.Get[records.Rotation](ctx, j.st, j.st.KS.Rotation(j.td))
	switch {
	case err == nil && !it.Value.Phase.Terminal():
		if it.Value.NewRootFingerprint != fp {
			return nil, causeErr(ErrJobRunning, "%v: job %s rotates to %s, not to %s %s; finish or abort it first", ErrJobRunning, it.Value.ID, it.Value.NewRootFingerprint, validate.Ref("NewCA"), fp)
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
			return nil, causeErr(ErrNoJob, "%v %s: start one with %s", ErrNoJob, j.td, validate.Ref("NewCA"))
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
		return fieldErr("NewCA", "give the new root certificate (PEM)")
	}
	issuer := records.IssuerExternal
	if j.cfg.NewCAKey != nil {
		issuer = records.IssuerDev
		if j.cfg.DevCADir == "" {
			return fieldErr("", "%s is for the dev CA: give %s too", validate.Ref("NewCAKey"), validate.Ref("DevCADir"))
		}
		if err := devca.CheckKeyPair(nc, j.cfg.NewCAKey); err != nil {
			return causeErr(err, "%s is not the key of %s: give the key the certificate was made for", validate.Ref("NewCAKey"), validate.Ref("NewCA"))
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
		return causeErr(ErrJobRunning, "%v: bundles/%s is locked by job %s; use %s or %s", ErrJobRunning, j.td, bit.Value.Lock.Job, validate.Ref("Resume"), validate.Ref("Abort"))
	}
	newFP := trust.Fingerprint(nc)
	var old []*x509.Certificate
	for _, r := range cur.X509Roots {
		if trust.Fingerprint(r) != newFP {
			old = append(old, r)
		}
	}
	if len(old) == 0 {
		return fieldErr("", "the bundle of %s holds no root other than %s: nothing to rotate from", j.td, validate.Ref("NewCA"))
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
		return causeErr(ErrJobRunning, "%v: job %s is in phase %s; use %s or %s", ErrJobRunning, prev.Value.ID, prev.Value.Phase, validate.Ref("Resume"), validate.Ref("Abort"))
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
			return causeErr(err, "add the new root to the dev CA: %v (resume with %s)", err, validate.Ref("NewCAKey"))
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
		return fieldErr("NewCA", "%v", err)
	}
	_ = b
	end := j.cfg.Now().Add(lifetime + j.cfg.MinValidity)
	if c.NotAfter.Before(end) {
		return fieldErr("", "%s expires %s, before the job's end plus %s (%s): use a root that lives longer", validate.Ref("NewCA"), c.NotAfter.UTC().Format(time.RFC3339), j.cfg.MinValidity, end.UTC().Format(time.RFC3339))
	}
	for _, u := range c.URIs {
		if u.Scheme == "spiffe" && u.Host != j.td {
			return fieldErr("", "%s carries %s, not of trust domain %s", validate.Ref("NewCA"), u, j.td)
		}
	}
	return nil
}
