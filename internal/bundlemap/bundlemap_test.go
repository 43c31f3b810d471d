package bundlemap

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshfed/meshfed/internal/reloadfile"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/devca"
)

// bundleOf is the dev CA bundle of td.
func bundleOf(t *testing.T, td string) *trust.Bundle {
	t.Helper()
	ca, err := devca.Init(t.TempDir(), td, devca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := ca.Bundle(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReadsWhatTrustWrites: the map trust.Set renders (what --bundle-dir holds) parses
// back to the same roots per trust domain.
func TestReadsWhatTrustWrites(t *testing.T) {
	east, west := bundleOf(t, "east.example"), bundleOf(t, "west.example")
	data, err := trust.NewSet(east, west).BundleMapJSON()
	if err != nil {
		t.Fatal(err)
	}
	set, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []*trust.Bundle{east, west} {
		got, err := set.GetX509BundleForTrustDomain(b.TrustDomain)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.X509Authorities()) != 1 || !got.X509Authorities()[0].Equal(b.X509Roots[0]) {
			t.Fatalf("%s: roots differ", b.TrustDomain)
		}
	}
	if _, err := set.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("north.example")); err == nil {
		t.Fatal("a trust domain not in the map has a bundle")
	}
}

func TestParseRefuses(t *testing.T) {
	for in, want := range map[string]string{
		`{}`: "trust_domains",
		`[]`: "bundle map",
		`{"trust_domains":{"Bad TD":{"keys":[]}}}`:                                                 "Bad TD",
		`{"trust_domains":{"east.example":{"keys":[{"use":"x509-svid","x5c":["bm90IGRlcg=="]}]}}}`: "east.example",
	} {
		if _, err := Parse([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%s) = %v, want an error naming %q", in, err, want)
		}
	}
}

func TestDirReloads(t *testing.T) {
	dir := t.TempDir()
	write := func(set *trust.Set, mod time.Time) {
		data, err := set.BundleMapJSON()
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, FileName)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
	east, west := bundleOf(t, "east.example"), bundleOf(t, "west.example")
	t0 := time.Now().Add(-time.Hour)
	write(trust.NewSet(east), t0)
	d, err := OpenDir(dir, reloadfile.Options{CheckInterval: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.GetX509BundleForTrustDomain(west.TrustDomain); err == nil {
		t.Fatal("west is not federated yet")
	}
	write(trust.NewSet(east, west), t0.Add(time.Second))
	if _, err := d.GetX509BundleForTrustDomain(west.TrustDomain); err != nil {
		t.Fatalf("west federated on disk, not seen: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"trust_domains":{"east.example":{"keys":[]}}}`))
	f.Add([]byte(`{"trust_domains":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = Parse(data)
	})
}
