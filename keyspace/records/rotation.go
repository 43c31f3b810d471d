package records

import (
	"fmt"
	"time"

	"github.com/meshfed/meshfed/api/validate"
)

// RotationPhase is where a root rotation job stands. The job is a state machine stored at
// rotations/<trust-domain>; every phase names what the job is waiting for, so a job that
// died resumes by reading its phase and doing that phase's work again (every step is
// idempotent).
type RotationPhase string

// The phases of a rotation, in order. The abort path branches off before the old root is
// removed (see trust/rotation for the gates).
const (
	// PhasePreflight: the job exists; it checks the new root and that every cluster acked
	// the current sequence, then publishes old+new roots (BothSequence) and takes the lock.
	PhasePreflight RotationPhase = "preflight"
	// PhaseWaitAcksBoth: old+new are published; waiting for every cluster to ack BothSequence.
	PhaseWaitAcksBoth RotationPhase = "wait-acks-both"
	// PhaseSwitchIssuer: every cluster trusts both roots; issuance moves to the new root (the
	// dev CA switches itself, an external issuer waits for the operator's confirmation).
	PhaseSwitchIssuer RotationPhase = "switch-issuer"
	// PhaseDrain: issuance is on the new root; waiting until IssuerSwitchedAt plus the
	// longest SVID lifetime so that no SVID of the old root is still in use.
	PhaseDrain RotationPhase = "drain"
	// PhaseWaitAcksNew: the new root alone is published (NewSequence); waiting for acks.
	PhaseWaitAcksNew RotationPhase = "wait-acks-new"
	// PhaseDone: finished; the lock is released.
	PhaseDone RotationPhase = "done"

	// PhaseAbortSwitchBack: abort after issuance moved: issuance goes back to the old root.
	PhaseAbortSwitchBack RotationPhase = "abort-switch-back"
	// PhaseAbortDrain: waiting until IssuerRevertedAt plus the longest SVID lifetime, so no
	// SVID of the new root is still in use when it is removed.
	PhaseAbortDrain RotationPhase = "abort-drain"
	// PhaseAbortWaitAcks: the old roots alone are published again (AbortSequence, a new
	// sequence: rollback is forward-only); waiting for acks.
	PhaseAbortWaitAcks RotationPhase = "abort-wait-acks"
	// PhaseAborted: finished by abort; the lock is released.
	PhaseAborted RotationPhase = "aborted"
)

var rotationPhases = map[RotationPhase]bool{
	PhasePreflight: true, PhaseWaitAcksBoth: true, PhaseSwitchIssuer: true, PhaseDrain: true,
	PhaseWaitAcksNew: true, PhaseDone: true, PhaseAbortSwitchBack: true, PhaseAbortDrain: true,
	PhaseAbortWaitAcks: true, PhaseAborted: true,
}

// Terminal reports whether the phase ends the job (a new job may then start).
func (p RotationPhase) Terminal() bool { return p == PhaseDone || p == PhaseAborted }

// Abortable reports whether an abort may still be requested: only before the old root is
// removed from the bundle.
func (p RotationPhase) Abortable() bool {
	switch p {
	case PhasePreflight, PhaseWaitAcksBoth, PhaseSwitchIssuer, PhaseDrain:
		return true
	}
	return false
}

// Issuer kinds of a rotation.
const (
	// IssuerDev: meshfed's development CA issues SVIDs; the job switches it itself.
	IssuerDev = "dev"
	// IssuerExternal: another issuer (SPIRE, cert-manager, ...); the operator switches it
	// and confirms with `meshfed trust rotate --confirm-issuer-switched`.
	IssuerExternal = "external"
)

// Rotation is rotations/<trust-domain>: one root rotation job of a trust domain.
type Rotation struct {
	Meta
	TrustDomain string        `json:"trustDomain"`
	ID          string        `json:"id"`
	Phase       RotationPhase `json:"phase"`
	// OldRoots are the X.509 roots of the bundle when the job started (PEM).
	OldRoots string `json:"oldRoots"`
	// NewRoot is the new root certificate (PEM) and NewRootFingerprint its sha256:<hex DER>.
	NewRoot            string `json:"newRoot"`
	NewRootFingerprint string `json:"newRootFingerprint"`
	// Issuer is IssuerDev or IssuerExternal; DevCADir is where the dev CA lives (IssuerDev).
	Issuer   string `json:"issuer"`
	DevCADir string `json:"devCADir,omitempty"`
	// OldIssuerFingerprint is the dev CA's issuing root when the job started: an abort after
	// the switch moves issuance back to it.
	OldIssuerFingerprint string `json:"oldIssuerFingerprint,omitempty"`
	// SVIDLifetimeMillis is the longest lifetime of an SVID of this trust domain: the
	// drain wait (milliseconds, so tests can use short lifetimes).
	SVIDLifetimeMillis int64 `json:"svidLifetimeMillis"`
	// BaseSequence is the bundle's sequence at preflight; the job publishes BaseSequence+1
	// (old+new), then BaseSequence+2 (new only) or, on abort, one more (old only).
	BaseSequence  uint64 `json:"baseSequence"`
	BothSequence  uint64 `json:"bothSequence,omitempty"`
	NewSequence   uint64 `json:"newSequence,omitempty"`
	AbortSequence uint64 `json:"abortSequence,omitempty"`
	// IssuerSwitchedAt is when issuance moved to the new root (start of the drain);
	// IssuerConfirmedBy names who confirmed it (external issuers).
	IssuerSwitchedAt  time.Time `json:"issuerSwitchedAt,omitzero"`
	IssuerConfirmedBy string    `json:"issuerConfirmedBy,omitempty"`
	// IssuerRevertedAt is when an aborted job moved issuance back to the old root.
	IssuerRevertedAt time.Time `json:"issuerRevertedAt,omitzero"`
	// ConfirmIssuerFor is set by --confirm-issuer-switched: the phase it confirms (so a
	// stale confirmation of the forward switch never confirms the switch back).
	ConfirmIssuerFor RotationPhase `json:"confirmIssuerFor,omitempty"`
	// AbortRequested is set by --abort; the job takes the abort path at its next step.
	AbortRequested   bool   `json:"abortRequested,omitempty"`
	AbortRequestedBy string `json:"abortRequestedBy,omitempty"`
	// Excluded clusters do not count at the ack gates; every exclusion is recorded.
	Excluded []Exclusion `json:"excluded,omitempty"`
	// Waiting names the clusters blocking the current gate, with why (for status).
	Waiting   []string   `json:"waiting,omitempty"`
	Holder    string     `json:"holder"`
	StartedBy string     `json:"startedBy"`
	StartedAt time.Time  `json:"startedAt"`
	UpdatedAt time.Time  `json:"updatedAt"`
	History   []Progress `json:"history,omitempty"`
}

// Exclusion records an operator's explicit decision that a cluster does not count at the
// gates of this job (it is gone, or will be re-synced by hand).
type Exclusion struct {
	Cluster string    `json:"cluster"`
	By      string    `json:"by"`
	At      time.Time `json:"at"`
}

// Progress is one transition of the job.
type Progress struct {
	Phase RotationPhase `json:"phase"`
	At    time.Time     `json:"at"`
	Note  string        `json:"note,omitempty"`
}

// MaxRotationHistory bounds History (a job has about ten transitions; the cap only guards
// against a writer gone wrong).
const MaxRotationHistory = 64

// IsExcluded reports whether cluster is excluded from the gates.
func (r *Rotation) IsExcluded(cluster string) bool {
	for _, e := range r.Excluded {
		if e.Cluster == cluster {
			return true
		}
	}
	return false
}

// SVIDLifetime is SVIDLifetimeMillis as a duration.
func (r *Rotation) SVIDLifetime() time.Duration {
	return time.Duration(r.SVIDLifetimeMillis) * time.Millisecond
}

// Validate implements Record.
func (r *Rotation) Validate() error {
	var errs validate.Errors
	errs.AddErr("trustDomain", validate.DNSSubdomain(r.TrustDomain))
	errs.AddErr("id", ValidateID(r.ID))
	if !rotationPhases[r.Phase] {
		errs.Add("phase", "%q is not a rotation phase", r.Phase)
	}
	if r.OldRoots == "" {
		errs.Add("oldRoots", "must hold the roots the job started from (PEM)")
	}
	if r.NewRoot == "" {
		errs.Add("newRoot", "must hold the new root certificate (PEM)")
	}
	if len(r.NewRootFingerprint) != len("sha256:")+64 || r.NewRootFingerprint[:7] != "sha256:" {
		errs.Add("newRootFingerprint", "must be sha256:<64 hex digits>")
	}
	switch r.Issuer {
	case IssuerDev:
		if r.DevCADir == "" {
			errs.Add("devCADir", "must name the development CA directory when issuer is %s", IssuerDev)
		}
	case IssuerExternal:
	default:
		errs.Add("issuer", "%q: use %s or %s", r.Issuer, IssuerDev, IssuerExternal)
	}
	if r.SVIDLifetimeMillis < 0 {
		errs.Add("svidLifetimeMillis", "must not be negative")
	}
	if r.BaseSequence < 1 {
		errs.Add("baseSequence", "must be at least 1")
	}
	if r.BothSequence != 0 && r.BothSequence != r.BaseSequence+1 {
		errs.Add("bothSequence", "%d: must be baseSequence+1 (%d)", r.BothSequence, r.BaseSequence+1)
	}
	if r.NewSequence != 0 && r.NewSequence != r.BothSequence+1 {
		errs.Add("newSequence", "%d: must be bothSequence+1 (%d)", r.NewSequence, r.BothSequence+1)
	}
	if r.AbortSequence != 0 && r.AbortSequence <= r.BothSequence {
		errs.Add("abortSequence", "%d: must follow bothSequence (%d)", r.AbortSequence, r.BothSequence)
	}
	seen := map[string]bool{}
	for i, e := range r.Excluded {
		errs.AddErr(fmt.Sprintf("excluded[%d].cluster", i), validate.DNSLabel(e.Cluster))
		if seen[e.Cluster] {
			errs.Add(fmt.Sprintf("excluded[%d].cluster", i), "%s is excluded twice", e.Cluster)
		}
		seen[e.Cluster] = true
		if e.By == "" {
			errs.Add(fmt.Sprintf("excluded[%d].by", i), "must name who excluded the cluster")
		}
	}
	if r.Holder == "" {
		errs.Add("holder", "must name the process running the job")
	}
	if r.StartedAt.IsZero() {
		errs.Add("startedAt", "must be set")
	}
	if len(r.History) > MaxRotationHistory {
		errs.Add("history", "%d entries: at most %d", len(r.History), MaxRotationHistory)
	}
	return errs.Err()
}

var _ Record = (*Rotation)(nil)
