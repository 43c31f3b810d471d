package operator

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/expiry"
)

// TrustStatus is what `meshfed trust status` shows: per trust domain the published
// bundle and which clusters have not acked it, each rotation job, and the roots close to
// expiry. Field names are stable (-o json|yaml).
type TrustStatus struct {
	Bundles []TrustBundleStatus `json:"bundles"`
	// Unreadable lists bundle records that do not decode or validate.
	Unreadable []string              `json:"unreadable,omitempty"`
	Rotations  []TrustRotationStatus `json:"rotations,omitempty"`
	// Warnings are the roots (and records) close to or past expiry.
	Warnings []string `json:"warnings,omitempty"`
}

// TrustBundleStatus is one bundles/<td> record.
type TrustBundleStatus struct {
	TrustDomain string `json:"trust_domain"`
	Owner       string `json:"owner"`
	// SharedBy lists the members that share this trust domain with its owner (join
	// --share-trust-domain-with): they read this bundle and never write it.
	SharedBy []string `json:"shared_by,omitempty"`
	Sequence uint64   `json:"sequence"`
	Digest   string   `json:"digest"`
	// Roots are the unexpired X.509 roots; nil when the JWKS does not parse (RootsError).
	Roots      []TrustRoot `json:"roots"`
	RootsError string      `json:"roots_error,omitempty"`
	// Lock is the rotation job holding the record, if any.
	Lock string `json:"lock,omitempty"`
	// NotAcked lists the joined clusters that have not applied this sequence and digest.
	NotAcked []ClusterAck `json:"not_acked"`
}

// TrustRoot is one root of a bundle.
type TrustRoot struct {
	Fingerprint string    `json:"fingerprint"`
	NotAfter    time.Time `json:"not_after"`
}

// ClusterAck is what a cluster has acked of a trust domain's bundle (Sequence nil: none).
type ClusterAck struct {
	Cluster  string  `json:"cluster"`
	Sequence *uint64 `json:"sequence"`
}

// TrustRotationStatus is one rotations/<td> record.
type TrustRotationStatus struct {
	ID            string                `json:"id"`
	TrustDomain   string                `json:"trust_domain"`
	Phase         records.RotationPhase `json:"phase"`
	Issuer        string                `json:"issuer"`
	BaseSequence  uint64                `json:"base_sequence"`
	BothSequence  uint64                `json:"both_sequence"`
	FinalSequence uint64                `json:"final_sequence"` // the new-only sequence, or the abort's
	Excluded      []records.Exclusion   `json:"excluded,omitempty"`
	UpdatedAt     time.Time             `json:"updated_at"`
	// WaitingFor says what the job waits for (an operator step, clusters' acks).
	WaitingFor string `json:"waiting_for,omitempty"`
}

// ReadTrustStatus reads bundles/, acks/, clusters/ and rotations/, and warns about roots
// expiring within warn of now.
func ReadTrustStatus(ctx context.Context, st *store.Store, now time.Time, warn time.Duration) (*TrustStatus, error) {
	bundles, _, bad, err := store.List[records.Bundle](ctx, st, st.KS.Family(records.KindBundle))
	if err != nil {
		return nil, err
	}
	acks, _, _, err := store.List[records.Ack](ctx, st, st.KS.Family(records.KindAck))
	if err != nil {
		return nil, err
	}
	clusters, _, _, err := store.List[records.Cluster](ctx, st, st.KS.Family(records.KindCluster))
	if err != nil {
		return nil, err
	}
	rots, _, _, err := store.List[records.Rotation](ctx, st, st.KS.Family(records.KindRotation))
	if err != nil {
		return nil, err
	}
	ackOf := map[string]map[string]*records.Ack{} // td → cluster → ack
	for _, a := range acks {
		if ackOf[a.Value.TrustDomain] == nil {
			ackOf[a.Value.TrustDomain] = map[string]*records.Ack{}
		}
		ackOf[a.Value.TrustDomain][a.Value.Cluster] = a.Value
	}
	var names []string
	for _, c := range clusters {
		names = append(names, c.Value.Name)
	}
	sort.Strings(names)
	ts := &TrustStatus{Bundles: []TrustBundleStatus{}}
	for _, it := range bundles {
		b := it.Value
		bs := TrustBundleStatus{TrustDomain: b.TrustDomain, Owner: b.Owner, Sequence: b.Sequence, Digest: b.Digest, NotAcked: []ClusterAck{}}
		if tb, err := trust.Parse(b.TrustDomain, b.JWKS, trust.ParseOptions{Now: now, AllowEmpty: true, DropExpired: true}); err == nil {
			bs.Roots = []TrustRoot{}
			for _, r := range tb.X509Roots {
				bs.Roots = append(bs.Roots, TrustRoot{Fingerprint: trust.Fingerprint(r), NotAfter: r.NotAfter.UTC()})
			}
		} else {
			bs.RootsError = err.Error()
		}
		if b.Lock != nil {
			bs.Lock = b.Lock.Job
		}
		for _, c := range clusters {
			if c.Value.TrustDomain == b.TrustDomain && c.Value.SharesTrustDomainWith != "" {
				bs.SharedBy = append(bs.SharedBy, c.Value.Name)
			}
		}
		sort.Strings(bs.SharedBy)
		for _, c := range names {
			a := ackOf[b.TrustDomain][c]
			if a == nil || a.Sequence != b.Sequence || a.Digest != b.Digest {
				ca := ClusterAck{Cluster: c}
				if a != nil {
					s := a.Sequence
					ca.Sequence = &s
				}
				bs.NotAcked = append(bs.NotAcked, ca)
			}
		}
		ts.Bundles = append(ts.Bundles, bs)
	}
	for _, e := range bad {
		ts.Unreadable = append(ts.Unreadable, e.Error())
	}
	for _, it := range rots {
		r := it.Value
		wait := strings.Join(r.Waiting, "; ")
		if r.Phase == records.PhaseSwitchIssuer && r.Issuer == records.IssuerExternal && r.ConfirmIssuerFor == "" {
			wait = "operator: switch the issuer, then --confirm-issuer-switched"
		}
		if r.AbortRequested && !r.Phase.Terminal() {
			wait = "(aborting) " + wait
		}
		ts.Rotations = append(ts.Rotations, TrustRotationStatus{ID: r.ID, TrustDomain: r.TrustDomain, Phase: r.Phase, Issuer: r.Issuer,
			BaseSequence: r.BaseSequence, BothSequence: r.BothSequence, FinalSequence: max(r.NewSequence, r.AbortSequence),
			Excluded: r.Excluded, UpdatedAt: r.UpdatedAt.UTC(), WaitingFor: wait})
	}
	ws, err := expiry.CheckBundles(ctx, st, now, warn)
	if err != nil {
		return nil, err
	}
	for _, w := range ws {
		ts.Warnings = append(ts.Warnings, w.String())
	}
	return ts, nil
}

// WriteTable prints the status for people (-o table).
func (ts *TrustStatus) WriteTable(out io.Writer) error {
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TRUST DOMAIN\tOWNER\tSEQ\tDIGEST\tROOTS (expiry)\tLOCK\tNOT ACKED")
	for _, b := range ts.Bundles {
		roots := "?"
		if b.Roots != nil {
			var rs []string
			for _, r := range b.Roots {
				rs = append(rs, fmt.Sprintf("%s(%s)", shortFP(r.Fingerprint), r.NotAfter.Format("2006-01-02")))
			}
			roots = strings.Join(rs, " ")
			if roots == "" {
				roots = "none (revoked)"
			}
		}
		var behind []string
		for _, a := range b.NotAcked {
			got := "none"
			if a.Sequence != nil {
				got = fmt.Sprint(*a.Sequence)
			}
			behind = append(behind, a.Cluster+"@"+got)
		}
		owner := b.Owner
		if len(b.SharedBy) > 0 {
			owner += " (shared with " + strings.Join(b.SharedBy, ",") + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s…\t%s\t%s\t%s\n", b.TrustDomain, owner, b.Sequence, b.Digest[7:19], roots, orDash(b.Lock), orDash(strings.Join(behind, " ")))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, e := range ts.Unreadable {
		fmt.Fprintf(out, "unreadable bundle record: %s\n", e)
	}
	if len(ts.Rotations) > 0 {
		fmt.Fprintln(out)
		tw = tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ROTATION\tTRUST DOMAIN\tPHASE\tISSUER\tSEQUENCES\tEXCLUDED\tUPDATED\tWAITING FOR")
		for _, r := range ts.Rotations {
			var ex []string
			for _, e := range r.Excluded {
				ex = append(ex, e.Cluster+"(by "+e.By+")")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d→%d→%d\t%s\t%s\t%s\n", r.ID, r.TrustDomain, r.Phase, r.Issuer, r.BaseSequence,
				r.BothSequence, r.FinalSequence, orDash(strings.Join(ex, " ")), r.UpdatedAt.Format(time.RFC3339), orDash(r.WaitingFor))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(ts.Warnings) > 0 {
		fmt.Fprintln(out)
		for _, w := range ts.Warnings {
			fmt.Fprintf(out, "WARNING: %s\n", w)
		}
	}
	return nil
}
