package bundlemap

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshfed/meshfed/internal/reloadfile"
)

// FileName is the bundle map's name in a bundle directory (and ConfigMap key).
const FileName = "bundle-map.json"

// MaxBytes caps a bundle map file: trust/ caps one bundle at 256 KiB, and a clusterset
// federates tens of trust domains, not thousands.
const MaxBytes = 16 << 20

// Parse reads a bundle map document into an X.509 bundle set: one bundle per trust domain
// (the map's keys are bare trust domain names). A trust domain with no X.509 root is left
// out: it can verify nothing.
func Parse(data []byte) (*x509bundle.Set, error) {
	if len(data) > MaxBytes {
		return nil, fmt.Errorf("bundle map is %d bytes, over the %d byte limit", len(data), MaxBytes)
	}
	var doc struct {
		TrustDomains map[string]json.RawMessage `json:"trust_domains"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("bundle map: %w", err)
	}
	if doc.TrustDomains == nil {
		return nil, errors.New(`bundle map: no "trust_domains" member: want {"trust_domains": {"<td>": <JWKS>}}`)
	}
	names := make([]string, 0, len(doc.TrustDomains))
	for n := range doc.TrustDomains {
		names = append(names, n)
	}
	sort.Strings(names)
	set := x509bundle.NewSet()
	for _, n := range names {
		td, err := spiffeid.TrustDomainFromString(n)
		if err != nil {
			return nil, fmt.Errorf("bundle map: trust domain %q: %w", n, err)
		}
		b, err := spiffebundle.Parse(td, doc.TrustDomains[n])
		if err != nil {
			return nil, fmt.Errorf("bundle map: trust domain %s: %w", n, err)
		}
		if len(b.X509Authorities()) == 0 {
			continue
		}
		set.Add(b.X509Bundle())
	}
	return set, nil
}

// Load reads and parses path.
func Load(path string) (*x509bundle.Set, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("bundle map: %w", err)
	}
	if fi.Size() > MaxBytes {
		return nil, fmt.Errorf("bundle map %s is %d bytes, over the %d byte limit", path, fi.Size(), MaxBytes)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bundle map: %w", err)
	}
	set, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return set, nil
}

// Dir is an x509bundle.Source over the bundle map of a bundle directory, reloaded when the
// file changes (the last good map stays when a rewrite is unreadable).
type Dir struct {
	f *reloadfile.File[*x509bundle.Set]
}

// OpenDir loads dir's bundle map now (a missing or bad map is an error at start).
func OpenDir(dir string, opts reloadfile.Options) (*Dir, error) {
	path := filepath.Join(dir, FileName)
	f, err := reloadfile.New(func() (*x509bundle.Set, error) { return Load(path) }, opts, path)
	if err != nil {
		return nil, err
	}
	return &Dir{f: f}, nil
}

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (d *Dir) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	set, err := d.f.Get()
	if err != nil {
		return nil, err
	}
	return set.GetX509BundleForTrustDomain(td)
}

var _ x509bundle.Source = (*Dir)(nil)
