package trust

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Set is an immutable snapshot of the federated bundles, one per trust domain (trust
// domains are never merged). It is what every output reads, and it implements go-spiffe's
// bundle sources so that tlsconfig can verify peers with it directly.
type Set struct {
	bundles map[string]*Bundle
}

// NewSet builds a set; a later bundle of the same trust domain replaces an earlier one.
func NewSet(bundles ...*Bundle) *Set {
	s := &Set{bundles: make(map[string]*Bundle, len(bundles))}
	for _, b := range bundles {
		s.bundles[b.TrustDomain.Name()] = b
	}
	return s
}

// Len is the number of trust domains.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.bundles)
}

// Get returns the bundle of td.
func (s *Set) Get(td string) (*Bundle, bool) {
	if s == nil {
		return nil, false
	}
	b, ok := s.bundles[td]
	return b, ok
}

// TrustDomains lists the trust domains, sorted.
func (s *Set) TrustDomains() []string {
	if s == nil {
		return nil
	}
	out := make([]string, 0, len(s.bundles))
	for td := range s.bundles {
		out = append(out, td)
	}
	sort.Strings(out)
	return out
}

// Bundles lists the bundles sorted by trust domain.
func (s *Set) Bundles() []*Bundle {
	out := make([]*Bundle, 0, s.Len())
	for _, td := range s.TrustDomains() {
		out = append(out, s.bundles[td])
	}
	return out
}

// X509Roots maps each trust domain to its roots: the shape the xDS server's
// SetTrustBundles takes (one SDS validation context per trust domain).
func (s *Set) X509Roots() map[string][]*x509.Certificate {
	out := make(map[string][]*x509.Certificate, s.Len())
	for _, b := range s.Bundles() {
		out[b.TrustDomain.Name()] = append([]*x509.Certificate(nil), b.X509Roots...)
	}
	return out
}

// Pools maps each trust domain to a pool of its roots (for the health checker).
func (s *Set) Pools() map[string]*x509.CertPool {
	out := make(map[string]*x509.CertPool, s.Len())
	for _, b := range s.Bundles() {
		out[b.TrustDomain.Name()] = b.Pool()
	}
	return out
}

// PoolsByCluster maps each cluster to the root pool of its trust domain (clusterTD: cluster
// name → trust domain, from the clusters/ records). A cluster whose trust domain has no
// bundle is left out: the health checker must not trust it with someone else's roots.
func (s *Set) PoolsByCluster(clusterTD map[string]string) map[string]*x509.CertPool {
	pools := s.Pools()
	out := make(map[string]*x509.CertPool, len(clusterTD))
	for c, td := range clusterTD {
		if p, ok := pools[td]; ok {
			out[c] = p
		}
	}
	return out
}

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (s *Set) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b, ok := s.Get(td.Name())
	if !ok {
		return nil, fmt.Errorf("no bundle for trust domain %q", td.Name())
	}
	return b.X509Bundle(), nil
}

// GetBundleForTrustDomain implements spiffebundle.Source (with sequence and refresh hint,
// which the bundle endpoint serves).
func (s *Set) GetBundleForTrustDomain(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	b, ok := s.Get(td.Name())
	if !ok {
		return nil, fmt.Errorf("no bundle for trust domain %q", td.Name())
	}
	return b.SPIFFE(), nil
}

// BundleMapJSON renders the SPIFFE bundle map {"trust_domains": {"<td>": <JWKS>}} keyed by
// the bare trust domain name: the file grpc-go's file_watcher certificate provider reads
// as spiffe_trust_bundle_map_file (grpc-go looks the map up by TrustDomain.Name()).
// Deterministic: equal sets render equal bytes.
func (s *Set) BundleMapJSON() ([]byte, error) {
	m := make(map[string]json.RawMessage, s.Len())
	for _, b := range s.Bundles() {
		j, err := b.MarshalJWKS()
		if err != nil {
			return nil, err
		}
		m[b.TrustDomain.Name()] = j
	}
	// encoding/json sorts map keys, so the output is deterministic.
	return json.MarshalIndent(struct {
		TrustDomains map[string]json.RawMessage `json:"trust_domains"`
	}{m}, "", "  ")
}

var (
	_ x509bundle.Source   = (*Set)(nil)
	_ spiffebundle.Source = (*Set)(nil)
)
