package trust_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/credentials/tls/certprovider/pemfile"

	"github.com/meshfed/meshfed/internal/testpki"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/devca"
)

func root(t testing.TB, td string) *x509.Certificate {
	t.Helper()
	c, _, err := devca.NewRoot(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// leaf is a self-signed certificate that is not a CA.
func leaf(t testing.TB) *x509.Certificate {
	t.Helper()
	return testpki.New(t, testpki.Spec{CN: "leaf", Serial: 7}).Cert
}

func jwks(t testing.TB, td string, roots []*x509.Certificate, kids ...string) []byte {
	t.Helper()
	sb := spiffebundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString(td), roots)
	for _, kid := range kids {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err := sb.AddJWTAuthority(kid, k.Public()); err != nil {
			t.Fatal(err)
		}
	}
	sb.SetSequenceNumber(3)
	sb.SetRefreshHint(5 * time.Minute)
	b, err := sb.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParsePEMAndJWKSAgree(t *testing.T) {
	r1, r2 := root(t, "a.example"), root(t, "a.example")
	p, err := trust.Parse("a.example", trust.CertsPEM([]*x509.Certificate{r2, r1}), trust.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	j, err := trust.Parse("a.example", jwks(t, "a.example", []*x509.Certificate{r1, r2}), trust.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Digest() != j.Digest() {
		t.Fatalf("same roots, different digests: %s vs %s", p.Digest(), j.Digest())
	}
	if j.Sequence != 3 || j.RefreshHint != 5*time.Minute {
		t.Fatalf("sequence %d hint %v", j.Sequence, j.RefreshHint)
	}
	other, _ := trust.Parse("b.example", trust.CertsPEM([]*x509.Certificate{r1, r2}), trust.ParseOptions{})
	if other != nil && other.Digest() == p.Digest() {
		t.Fatal("the digest must cover the trust domain")
	}
}

func TestMarshalJWKSDeterministicAndRoundTrips(t *testing.T) {
	r1, r2 := root(t, "a.example"), root(t, "a.example")
	b, err := trust.Parse("a.example", jwks(t, "a.example", []*x509.Certificate{r1, r2}, "k1", "k2", "k3"), trust.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := b.MarshalJWKS()
	if err != nil {
		t.Fatal(err)
	}
	for range 20 { // go-spiffe's Marshal iterates a map: repeat to catch order changes
		again, _ := b.MarshalJWKS()
		if !bytes.Equal(first, again) {
			t.Fatalf("MarshalJWKS is not deterministic:\n%s\n%s", first, again)
		}
	}
	back, err := trust.Parse("a.example", first, trust.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if back.Digest() != b.Digest() || back.Sequence != 3 || back.RefreshHint != 5*time.Minute || len(back.Keys) != 3 {
		t.Fatalf("round trip changed the bundle: %+v", back)
	}
}

func TestRevokedBundle(t *testing.T) {
	empty := []byte(`{"keys":[],"spiffe_sequence":9}`)
	if _, err := trust.Parse("a.example", empty, trust.ParseOptions{}); err == nil || !strings.Contains(err.Error(), "revoking") {
		t.Fatalf("empty bundle accepted without AllowEmpty: %v", err)
	}
	b, err := trust.Parse("a.example", empty, trust.ParseOptions{AllowEmpty: true})
	if err != nil {
		t.Fatal(err)
	}
	j, _ := b.MarshalJWKS()
	if !bytes.Contains(j, []byte(`"keys":[]`)) {
		t.Fatalf("an empty bundle must render keys as [] (null does not parse): %s", j)
	}
	if _, err := trust.Parse("a.example", j, trust.ParseOptions{AllowEmpty: true}); err != nil {
		t.Fatal(err)
	}
}

func TestParseRejects(t *testing.T) {
	td := "a.example"
	good := root(t, td)
	expired, _, _ := devca.NewRootAt(td, time.Now().Add(-48*time.Hour), time.Hour)
	future, _, _ := devca.NewRootAt(td, time.Now().Add(48*time.Hour), time.Hour)
	goodJWKS := jwks(t, td, []*x509.Certificate{good})
	var dupKid map[string]any
	_ = json.Unmarshal(jwks(t, td, nil, "same"), &dupKid)
	keys := dupKid["keys"].([]any)
	dupKid["keys"] = append(keys, keys[0])
	dupKidJSON, _ := json.Marshal(dupKid)
	var dupRoot map[string]any
	_ = json.Unmarshal(goodJWKS, &dupRoot)
	dupRoot["keys"] = append(dupRoot["keys"].([]any), dupRoot["keys"].([]any)[0])
	dupRootJSON, _ := json.Marshal(dupRoot)

	cases := map[string]struct {
		data []byte
		want string
	}{
		"expired root":   {trust.CertsPEM([]*x509.Certificate{good, expired}), "expired"},
		"future root":    {trust.CertsPEM([]*x509.Certificate{future}), "not valid before"},
		"non-CA cert":    {trust.CertsPEM([]*x509.Certificate{leaf(t)}), "not a CA"},
		"empty keys":     {[]byte(`{"keys":[]}`), "revoking"},
		"no keys field":  {[]byte(`{"spiffe_sequence":1}`), `no "keys"`},
		"garbage":        {[]byte("hello"), "neither PEM"},
		"bad json":       {[]byte("{\"keys\":[{]"), "not a SPIFFE JSON bundle"},
		"empty":          {[]byte("  \n"), "empty"},
		"oversize":       {append([]byte("{\"keys\":[],\"x\":\""), bytes.Repeat([]byte("a"), trust.MaxBundleBytes)...), "limit"},
		"duplicate kid":  {dupKidJSON, "unique"},
		"duplicate root": {dupRootJSON, "listed twice"},
		"private key":    {[]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), "never a key"},
		"negative hint":  {[]byte(`{"keys":[],"spiffe_refresh_hint":-1}`), "negative"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := trust.Parse(td, c.data, trust.ParseOptions{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want an error containing %q, got %v", c.want, err)
			}
		})
	}
	if _, err := trust.Parse("spiffe://a.example", goodJWKS, trust.ParseOptions{}); err == nil {
		t.Fatal("a trust domain with scheme must be refused")
	}
}

func TestDropExpired(t *testing.T) {
	td := "a.example"
	good := root(t, td)
	expired, _, _ := devca.NewRootAt(td, time.Now().Add(-48*time.Hour), time.Hour)
	b, err := trust.Parse(td, trust.CertsPEM([]*x509.Certificate{good, expired}), trust.ParseOptions{DropExpired: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(b.X509Roots) != 1 || len(b.Dropped) != 1 {
		t.Fatalf("roots %d dropped %v", len(b.X509Roots), b.Dropped)
	}
	if _, err := trust.Parse(td, trust.CertsPEM([]*x509.Certificate{expired}), trust.ParseOptions{DropExpired: true}); err == nil {
		t.Fatal("a bundle left empty by dropping must be refused")
	}
}

func TestRecordRoundTripAndTamper(t *testing.T) {
	b, err := trust.Parse("a.example", trust.CertsPEM([]*x509.Certificate{root(t, "a.example")}), trust.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Record("c1", time.Now()); err == nil {
		t.Fatal("a record needs a sequence")
	}
	rec, err := b.WithMeta(4, time.Minute).Record("c1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Validate(); err != nil {
		t.Fatal(err)
	}
	back, err := trust.FromRecord(rec, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if back.Digest() != b.Digest() || back.Sequence != 4 {
		t.Fatal("round trip changed the bundle")
	}
	rec.Sequence = 5
	if _, err := trust.FromRecord(rec, time.Now()); err == nil || !strings.Contains(err.Error(), "sequence") {
		t.Fatalf("sequence mismatch not caught: %v", err)
	}
	rec.Sequence = 4
	rec.Digest = "sha256:" + strings.Repeat("0", 64)
	if _, err := trust.FromRecord(rec, time.Now()); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Fatalf("digest mismatch not caught: %v", err)
	}
}

// TestBundleMapReadByGRPC checks the bundle map file against grpc-go's own reader (the
// file_watcher certificate provider behind spiffe_trust_bundle_map_file).
func TestBundleMapReadByGRPC(t *testing.T) {
	ra, rb := root(t, "a.example"), root(t, "b.example")
	a, _ := trust.Parse("a.example", trust.CertsPEM([]*x509.Certificate{ra}), trust.ParseOptions{})
	b, _ := trust.Parse("b.example", jwks(t, "b.example", []*x509.Certificate{rb}, "k"), trust.ParseOptions{})
	set := trust.NewSet(a.WithMeta(1, 0), b)
	data, err := set.BundleMapJSON()
	if err != nil {
		t.Fatal(err)
	}
	again, _ := set.BundleMapJSON()
	if !bytes.Equal(data, again) {
		t.Fatal("bundle map not deterministic")
	}
	path := filepath.Join(t.TempDir(), "bundle-map.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	prov, err := pemfile.NewProvider(pemfile.Options{SPIFFEBundleMapFile: path, RefreshDuration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer prov.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	km, err := prov.KeyMaterial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if pc := set.PoolsByCluster(map[string]string{"east": "a.example", "west": "b.example", "gone": "c.example"}); len(pc) != 2 || pc["east"] == nil {
		t.Fatalf("pools by cluster: %v", pc)
	}
	if len(km.SPIFFEBundleMap) != 2 {
		t.Fatalf("grpc read %d trust domains", len(km.SPIFFEBundleMap))
	}
	got := km.SPIFFEBundleMap["a.example"]
	if got == nil || len(got.X509Authorities()) != 1 || !got.X509Authorities()[0].Equal(ra) {
		t.Fatalf("grpc did not find a.example's root under the bare name: %v", km.SPIFFEBundleMap)
	}
}

func FuzzParse(f *testing.F) {
	r := root(f, "a.example")
	f.Add(trust.CertsPEM([]*x509.Certificate{r}), false)
	f.Add(jwks(f, "a.example", []*x509.Certificate{r}, "k1"), false)
	f.Add([]byte(`{"keys":[],"spiffe_sequence":1}`), true)
	f.Add([]byte(`{"keys":[{"use":"x509-svid","x5c":[]}]}`), false)
	f.Add([]byte(`{"keys":[{"use":"jwt-svid","kid":"a","kty":"EC","crv":"P-256","x":"","y":""}]}`), false)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, allowEmpty bool) {
		b, err := trust.Parse("a.example", data, trust.ParseOptions{AllowEmpty: allowEmpty, DropExpired: true})
		if err != nil {
			return
		}
		// Whatever parses renders canonically and parses back to the same trust content.
		j, err := b.MarshalJWKS()
		if err != nil {
			t.Fatalf("parsed bundle does not marshal: %v", err)
		}
		back, err := trust.Parse("a.example", j, trust.ParseOptions{AllowEmpty: allowEmpty, DropExpired: true})
		if err != nil {
			t.Fatalf("canonical form does not parse: %v\n%s", err, j)
		}
		if back.Digest() != b.Digest() {
			t.Fatalf("canonical form changed the digest")
		}
	})
}
