package trust

import (
	"fmt"
	"time"

	"github.com/meshfed/meshfed/keyspace/records"
)

// Record renders b as the bundles/<td> record owned by owner, carrying b's sequence.
func (b *Bundle) Record(owner string, now time.Time) (*records.Bundle, error) {
	if b.Sequence < 1 {
		return nil, fmt.Errorf("bundle of %s: a published bundle needs a sequence of at least 1", b.TrustDomain.Name())
	}
	jwks, err := b.MarshalJWKS()
	if err != nil {
		return nil, err
	}
	return &records.Bundle{
		TrustDomain: b.TrustDomain.Name(),
		Owner:       owner,
		Sequence:    b.Sequence,
		RefreshHint: int64(b.RefreshHint / time.Second),
		JWKS:        jwks,
		Digest:      b.Digest(),
		Revoked:     b.Empty(),
		UpdatedAt:   now.UTC(),
	}, nil
}

// FromRecord parses and validates the bundle inside a bundles/<td> record, and checks that
// the record's own fields (sequence, digest, trust domain) agree with the document: a
// record whose digest does not match its content was tampered with or written by a broken
// writer, and is refused.
func FromRecord(r *records.Bundle, now time.Time) (*Bundle, error) {
	b, err := Parse(r.TrustDomain, r.JWKS, ParseOptions{Now: now, AllowEmpty: r.Revoked})
	if err != nil {
		return nil, err
	}
	if err := checkRecord(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

// FromRecordKeepValid is FromRecord for readers: a root that expired after the record was
// written (writes are strict) is left out instead of making the whole trust domain
// untrusted; the record's integrity (sequence, digest) is still checked on the content as
// written. Dropped names what was left out. A bundle left with nothing valid is an error.
func FromRecordKeepValid(r *records.Bundle, now time.Time) (b *Bundle, dropped []string, err error) {
	b, err = FromRecord(r, now)
	if err == nil {
		return b, nil, nil
	}
	at := r.UpdatedAt
	if at.IsZero() || !at.Before(now) {
		return nil, nil, err
	}
	full, ferr := Parse(r.TrustDomain, r.JWKS, ParseOptions{Now: at, AllowEmpty: r.Revoked})
	if ferr != nil {
		return nil, nil, err // not an expiry problem: report the original error
	}
	if cerr := checkRecord(r, full); cerr != nil {
		return nil, nil, cerr
	}
	kept, kerr := full.WithRoots(full.X509Roots, ParseOptions{Now: now, DropExpired: true})
	if kerr != nil {
		return nil, nil, kerr
	}
	kept.Sequence = full.Sequence
	return kept, kept.Dropped, nil
}

func checkRecord(r *records.Bundle, b *Bundle) error {
	if b.Sequence != r.Sequence {
		return fmt.Errorf("bundle of %s: record sequence %d but spiffe_sequence %d in the document", r.TrustDomain, r.Sequence, b.Sequence)
	}
	if b.Digest() != r.Digest {
		return fmt.Errorf("bundle of %s: record digest %s does not match its content (%s)", r.TrustDomain, r.Digest, b.Digest())
	}
	if int64(b.RefreshHint/time.Second) != r.RefreshHint {
		return fmt.Errorf("bundle of %s: record refresh hint %ds but %ds in the document", r.TrustDomain, r.RefreshHint, int64(b.RefreshHint/time.Second))
	}
	return nil
}
