package trust

import (
	"fmt"
	"time"

	"github.com/meshfed/meshfed/federation/records"
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
	if b.Sequence != r.Sequence {
		return nil, fmt.Errorf("bundle of %s: record sequence %d but spiffe_sequence %d in the document", r.TrustDomain, r.Sequence, b.Sequence)
	}
	if b.Digest() != r.Digest {
		return nil, fmt.Errorf("bundle of %s: record digest %s does not match its content (%s)", r.TrustDomain, r.Digest, b.Digest())
	}
	if int64(b.RefreshHint/time.Second) != r.RefreshHint {
		return nil, fmt.Errorf("bundle of %s: record refresh hint %ds but %ds in the document", r.TrustDomain, r.RefreshHint, int64(b.RefreshHint/time.Second))
	}
	return b, nil
}
