package trust_test

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshfed/meshfed/trust"
)

// benchDoc is a typical SPIFFE bundle: 3 roots (mid-rotation plus one spare) and 3 JWT keys.
func benchDoc(b *testing.B) []byte {
	return jwks(b, "a.example", []*x509.Certificate{root(b, "a.example"), root(b, "a.example"), root(b, "a.example")}, "k1", "k2", "k3")
}

// BenchmarkGoSpiffeParse is the baseline: go-spiffe's parser alone (no validation, no digest).
func BenchmarkGoSpiffeParse(b *testing.B) {
	doc := benchDoc(b)
	td := spiffeid.RequireTrustDomainFromString("a.example")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := spiffebundle.Parse(td, doc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParse is meshfed's full path: structural checks, go-spiffe parse, validation,
// canonical order and digest.
func BenchmarkParse(b *testing.B) {
	doc := benchDoc(b)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := trust.Parse("a.example", doc, trust.ParseOptions{Now: now}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGoSpiffeMarshal is the baseline of rendering: go-spiffe's (non-deterministic) Marshal.
func BenchmarkGoSpiffeMarshal(b *testing.B) {
	bd, _ := trust.Parse("a.example", benchDoc(b), trust.ParseOptions{})
	sb := bd.SPIFFE()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := sb.Marshal(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMarshalJWKS is meshfed's deterministic rendering (Marshal, then re-order).
func BenchmarkMarshalJWKS(b *testing.B) {
	bd, _ := trust.Parse("a.example", benchDoc(b), trust.ParseOptions{})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bd.MarshalJWKS(); err != nil {
			b.Fatal(err)
		}
	}
}
