package trust

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/keyspace/records"
)

// MaxBundleBytes caps a bundle document. A SPIFFE bundle holds a few roots and keys (a few
// KiB each); 256 KiB leaves room for dozens while keeping one record far below etcd's
// request limit and a hostile endpoint from making us buffer megabytes.
const MaxBundleBytes = 256 << 10

// MaxKeys caps the number of roots plus keys in one bundle.
const MaxKeys = 64

// ClockSkew is how far a root's NotBefore may be in the future and still count as valid.
const ClockSkew = 5 * time.Minute

// Key uses of the SPIFFE bundle format.
const (
	UseX509 = "x509-svid"
	UseJWT  = "jwt-svid"
	UseWIT  = "wit-svid"
)

// Bundle is a validated SPIFFE bundle of one trust domain in canonical order: roots sorted
// by DER, keys by use and key id. It is immutable once parsed.
type Bundle struct {
	TrustDomain spiffeid.TrustDomain
	// X509Roots are the X.509 authorities (CA certificates), sorted by DER bytes.
	X509Roots []*x509.Certificate
	// Keys are the JWT-SVID (and WIT-SVID) authorities, sorted by use then key id.
	Keys []PublicKey
	// Sequence is spiffe_sequence (0: absent) and RefreshHint spiffe_refresh_hint (0: absent).
	Sequence    uint64
	RefreshHint time.Duration
	// Dropped lists what parsing left out on purpose (expired roots when DropExpired, keys
	// of unknown use), for logs.
	Dropped []string

	digest string
}

// PublicKey is one JWT-SVID or WIT-SVID authority.
type PublicKey struct {
	Use string
	ID  string
	Key crypto.PublicKey
}

// ParseOptions tune Parse.
type ParseOptions struct {
	// Now is the time roots must be valid at (default time.Now()).
	Now time.Time
	// AllowEmpty accepts a bundle without roots or keys: "trust nothing from this domain",
	// only when deliberately revoking.
	AllowEmpty bool
	// DropExpired leaves expired roots out instead of refusing the bundle (a SPIRE server
	// keeps an expired root in its bundle for a while before pruning it; an expired root
	// verifies nothing, so leaving it out changes no decision). The rest must still be
	// valid, and a bundle left empty is still refused.
	DropExpired bool
}

// Parse reads a bundle of trust domain td from PEM certificates or a SPIFFE JSON bundle
// (JWKS) and validates it: every root a CA certificate within its validity, unique key ids,
// not empty unless AllowEmpty, at most MaxBundleBytes and MaxKeys. Errors name what is
// wrong and how to fix it.
func Parse(td string, data []byte, opts ParseOptions) (*Bundle, error) {
	tdID, err := ParseTrustDomain(td)
	if err != nil {
		return nil, err
	}
	if len(data) > MaxBundleBytes {
		return nil, fmt.Errorf("bundle of %s is %d bytes, over the %d byte limit: a bundle holds a few roots, check the source", td, len(data), MaxBundleBytes)
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	trimmed := bytes.TrimSpace(data)
	var b *Bundle
	switch {
	case len(trimmed) == 0:
		return nil, fmt.Errorf("bundle of %s is empty: give PEM certificates or a SPIFFE JSON bundle", td)
	case bytes.HasPrefix(trimmed, []byte("-----BEGIN")):
		b, err = parsePEM(tdID, trimmed)
	case trimmed[0] == '{':
		b, err = parseJWKS(tdID, trimmed)
	default:
		return nil, fmt.Errorf("bundle of %s is neither PEM (-----BEGIN CERTIFICATE-----) nor a SPIFFE JSON bundle ({\"keys\": [...]})", td)
	}
	if err != nil {
		return nil, fmt.Errorf("bundle of %s: %w", td, err)
	}
	if err := b.validate(opts); err != nil {
		return nil, fmt.Errorf("bundle of %s: %w", td, err)
	}
	b.digest = b.computeDigest()
	return b, nil
}

// ParseTrustDomain checks a trust domain name (a bare name such as example.org, no
// spiffe:// scheme): lower-case DNS name, as meshfed keys and SNI need.
func ParseTrustDomain(td string) (spiffeid.TrustDomain, error) {
	if strings.HasPrefix(td, "spiffe://") {
		return spiffeid.TrustDomain{}, fmt.Errorf("trust domain %q: give the bare name without spiffe://", td)
	}
	if err := validate.DNSSubdomain(td); err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("trust domain: %w", err)
	}
	return spiffeid.TrustDomainFromString(td)
}

func parsePEM(td spiffeid.TrustDomain, data []byte) (*Bundle, error) {
	b := &Bundle{TrustDomain: td}
	rest := data
	for i := 0; ; i++ {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			if len(bytes.TrimSpace(rest)) != 0 {
				return nil, fmt.Errorf("PEM: data after certificate %d is not a PEM block", i)
			}
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is %q: a bundle holds only CERTIFICATE blocks (never a key)", i, blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM certificate %d: %w", i, err)
		}
		b.X509Roots = append(b.X509Roots, c)
		if len(b.X509Roots) > MaxKeys {
			return nil, fmt.Errorf("more than %d certificates", MaxKeys)
		}
	}
	return b, nil
}

// jwksDoc is the structure of a SPIFFE bundle, read by us before go-spiffe parses it: go-spiffe
// silently keeps the last of two keys with the same id and drops duplicate roots.
type jwksDoc struct {
	Keys        *[]json.RawMessage `json:"keys"`
	Sequence    *uint64            `json:"spiffe_sequence,omitempty"`
	RefreshHint *int64             `json:"spiffe_refresh_hint,omitempty"`
}

type jwkHead struct {
	Use string   `json:"use"`
	Kid string   `json:"kid"`
	X5c []string `json:"x5c"`
}

func parseJWKS(td spiffeid.TrustDomain, data []byte) (*Bundle, error) {
	var doc jwksDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("not a SPIFFE JSON bundle: %w", err)
	}
	if doc.Keys == nil {
		return nil, errors.New(`no "keys" member: a SPIFFE bundle is a JWKS document {"keys": [...]}`)
	}
	if len(*doc.Keys) > MaxKeys {
		return nil, fmt.Errorf("%d keys, over the limit of %d", len(*doc.Keys), MaxKeys)
	}
	if doc.RefreshHint != nil && *doc.RefreshHint < 0 {
		return nil, fmt.Errorf("spiffe_refresh_hint %d is negative", *doc.RefreshHint)
	}
	var dropped []string
	x509Entries := 0
	kids := map[string]int{}
	for i, raw := range *doc.Keys {
		var h jwkHead
		if err := json.Unmarshal(raw, &h); err != nil {
			return nil, fmt.Errorf("keys[%d]: %w", i, err)
		}
		switch h.Use {
		case UseX509:
			if len(h.X5c) != 1 {
				return nil, fmt.Errorf("keys[%d]: an %s key holds exactly one certificate in x5c, this one %d", i, UseX509, len(h.X5c))
			}
			x509Entries++
		case UseJWT, UseWIT:
			if h.Kid == "" {
				return nil, fmt.Errorf("keys[%d]: a %s key needs a kid", i, h.Use)
			}
			id := h.Use + "/" + h.Kid
			if j, dup := kids[id]; dup {
				return nil, fmt.Errorf("keys[%d]: kid %q is also keys[%d]: key ids must be unique", i, h.Kid, j)
			}
			kids[id] = i
		default:
			// The SPIFFE bundle format says to ignore keys of an unknown use.
			dropped = append(dropped, fmt.Sprintf("keys[%d]: unknown use %q", i, h.Use))
		}
	}
	sb, err := spiffebundle.Parse(td, data)
	if err != nil {
		return nil, err
	}
	b := &Bundle{TrustDomain: td, Dropped: dropped, X509Roots: sb.X509Authorities()}
	if len(b.X509Roots) != x509Entries {
		return nil, fmt.Errorf("%d %s keys but %d distinct roots: a root is listed twice", x509Entries, UseX509, len(b.X509Roots))
	}
	for kid, k := range sb.JWTAuthorities() {
		b.Keys = append(b.Keys, PublicKey{Use: UseJWT, ID: kid, Key: k})
	}
	for kid, k := range sb.WITAuthorities() {
		b.Keys = append(b.Keys, PublicKey{Use: UseWIT, ID: kid, Key: k})
	}
	if doc.Sequence != nil {
		b.Sequence = *doc.Sequence
	}
	if doc.RefreshHint != nil {
		b.RefreshHint = time.Duration(*doc.RefreshHint) * time.Second
	}
	return b, nil
}

// validate checks the content and puts it in canonical order.
func (b *Bundle) validate(opts ParseOptions) error {
	var errs validate.Errors
	kept := b.X509Roots[:0:0]
	for i, c := range b.X509Roots {
		field := fmt.Sprintf("roots[%d] (%s)", i, c.Subject)
		if !c.BasicConstraintsValid || !c.IsCA {
			errs.Add(field, "not a CA certificate (basicConstraints CA:TRUE is required): a bundle holds roots, never a leaf")
			continue
		}
		if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0 {
			errs.Add(field, "key usage lacks certSign: it cannot sign SVIDs")
			continue
		}
		if opts.Now.After(c.NotAfter) {
			if opts.DropExpired {
				b.Dropped = append(b.Dropped, fmt.Sprintf("%s: expired %s", field, c.NotAfter.UTC().Format(time.RFC3339)))
				continue
			}
			errs.Add(field, "expired %s: remove it from the bundle (rotate first if it is the only root)", c.NotAfter.UTC().Format(time.RFC3339))
			continue
		}
		if c.NotBefore.After(opts.Now.Add(ClockSkew)) {
			errs.Add(field, "not valid before %s: check the clock or the certificate", c.NotBefore.UTC().Format(time.RFC3339))
			continue
		}
		kept = append(kept, c)
	}
	if errs.Len() > 0 {
		return errs.Err()
	}
	b.X509Roots = kept
	if len(b.X509Roots)+len(b.Keys) > MaxKeys {
		return fmt.Errorf("%d roots and keys, over the limit of %d", len(b.X509Roots)+len(b.Keys), MaxKeys)
	}
	if len(b.X509Roots) == 0 && len(b.Keys) == 0 && !opts.AllowEmpty {
		if len(b.Dropped) > 0 {
			return fmt.Errorf("no valid root or key left (%s): refusing an empty bundle", strings.Join(b.Dropped, "; "))
		}
		return errors.New("no root and no key: an empty bundle means \"trust nothing from this domain\" and is accepted only when revoking on purpose")
	}
	sort.Slice(b.X509Roots, func(i, j int) bool { return bytes.Compare(b.X509Roots[i].Raw, b.X509Roots[j].Raw) < 0 })
	sort.Slice(b.Keys, func(i, j int) bool {
		if b.Keys[i].Use != b.Keys[j].Use {
			return b.Keys[i].Use < b.Keys[j].Use
		}
		return b.Keys[i].ID < b.Keys[j].ID
	})
	for _, k := range b.Keys {
		if _, err := x509.MarshalPKIXPublicKey(k.Key); err != nil {
			return fmt.Errorf("%s key %q: unsupported public key type %T", k.Use, k.ID, k.Key)
		}
	}
	return nil
}

// digestDomain separates this digest from any other sha256 over similar bytes.
const digestDomain = "meshfed-bundle-digest-v1"

// computeDigest hashes the canonical trust content: the trust domain, every root's DER in
// sorted order, every key's use, id and PKIX DER in sorted order, each length-prefixed.
// Sequence and refresh hint are left out on purpose: the digest says WHAT is trusted, the
// sequence says WHICH publication it is, and a record or ack carries both.
func (b *Bundle) computeDigest() string {
	h := sha256.New()
	put := func(p []byte) {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(p)))
		h.Write(n[:])
		h.Write(p)
	}
	put([]byte(digestDomain))
	put([]byte(b.TrustDomain.Name()))
	for _, c := range b.X509Roots {
		put([]byte(UseX509))
		put(c.Raw)
	}
	for _, k := range b.Keys {
		der, _ := x509.MarshalPKIXPublicKey(k.Key) // checked in validate
		put([]byte(k.Use))
		put([]byte(k.ID))
		put(der)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// Digest is "sha256:<hex>" over the canonical trust content (see computeDigest).
func (b *Bundle) Digest() string { return b.digest }

// Empty reports whether the bundle trusts nothing.
func (b *Bundle) Empty() bool { return len(b.X509Roots) == 0 && len(b.Keys) == 0 }

// WithMeta returns a copy with another sequence and refresh hint (same content, same digest).
func (b *Bundle) WithMeta(seq uint64, hint time.Duration) *Bundle {
	c := *b
	c.Sequence, c.RefreshHint = seq, hint
	return &c
}

// WithRoots returns a copy with other roots (same keys, no sequence); the result is
// validated like a parsed bundle.
func (b *Bundle) WithRoots(roots []*x509.Certificate, opts ParseOptions) (*Bundle, error) {
	c := &Bundle{TrustDomain: b.TrustDomain, Keys: append([]PublicKey(nil), b.Keys...), RefreshHint: b.RefreshHint}
	seen := map[string]bool{}
	for _, r := range roots {
		fp := Fingerprint(r)
		if !seen[fp] {
			seen[fp] = true
			c.X509Roots = append(c.X509Roots, r)
		}
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	if err := c.validate(opts); err != nil {
		return nil, fmt.Errorf("bundle of %s: %w", b.TrustDomain.Name(), err)
	}
	c.digest = c.computeDigest()
	return c, nil
}

// HasRoot reports whether the bundle holds the root with this fingerprint.
func (b *Bundle) HasRoot(fingerprint string) bool {
	for _, r := range b.X509Roots {
		if Fingerprint(r) == fingerprint {
			return true
		}
	}
	return false
}

// Fingerprint is "sha256:<hex>" of a certificate's DER.
func Fingerprint(c *x509.Certificate) string { return records.Fingerprint(c.Raw) }

// RootsPEM is the roots as concatenated PEM, in canonical order.
func (b *Bundle) RootsPEM() []byte {
	return CertsPEM(b.X509Roots)
}

// CertsPEM encodes certificates as concatenated PEM.
func CertsPEM(certs []*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

// SPIFFE converts to a go-spiffe bundle (with sequence and refresh hint when set).
func (b *Bundle) SPIFFE() *spiffebundle.Bundle {
	sb := spiffebundle.FromX509Authorities(b.TrustDomain, b.X509Roots)
	for _, k := range b.Keys {
		switch k.Use {
		case UseJWT:
			_ = sb.AddJWTAuthority(k.ID, k.Key)
		case UseWIT:
			_ = sb.AddWITAuthority(k.ID, k.Key)
		}
	}
	if b.Sequence != 0 {
		sb.SetSequenceNumber(b.Sequence)
	}
	if b.RefreshHint != 0 {
		sb.SetRefreshHint(b.RefreshHint)
	}
	return sb
}

// X509Bundle is the X.509 part as a go-spiffe bundle.
func (b *Bundle) X509Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(b.TrustDomain, b.X509Roots)
}

// Pool is the roots as a certificate pool.
func (b *Bundle) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range b.X509Roots {
		p.AddCert(r)
	}
	return p
}

// MarshalJWKS renders the SPIFFE bundle document deterministically: keys in canonical order,
// "keys" always present (an empty bundle is {"keys":[]}, never null). go-spiffe's Marshal
// iterates maps, so its output differs run to run; each key it renders is deterministic, so
// we re-order them.
func (b *Bundle) MarshalJWKS() ([]byte, error) {
	raw, err := b.SPIFFE().Marshal()
	if err != nil {
		return nil, fmt.Errorf("marshal bundle of %s: %w", b.TrustDomain.Name(), err)
	}
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("marshal bundle of %s: %w", b.TrustDomain.Name(), err)
	}
	type sortKey struct {
		use, kid, x5c string
		raw           json.RawMessage
	}
	keys := make([]sortKey, 0, len(doc.Keys))
	for _, k := range doc.Keys {
		var h jwkHead
		if err := json.Unmarshal(k, &h); err != nil {
			return nil, fmt.Errorf("marshal bundle of %s: %w", b.TrustDomain.Name(), err)
		}
		sk := sortKey{use: h.Use, kid: h.Kid, raw: k}
		if len(h.X5c) > 0 {
			sk.x5c = h.X5c[0]
		}
		keys = append(keys, sk)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].use != keys[j].use {
			return keys[i].use > keys[j].use // x509-svid first, then wit-svid, jwt-svid
		}
		if keys[i].kid != keys[j].kid {
			return keys[i].kid < keys[j].kid
		}
		return keys[i].x5c < keys[j].x5c
	})
	out := struct {
		Keys        []json.RawMessage `json:"keys"`
		Sequence    *uint64           `json:"spiffe_sequence,omitempty"`
		RefreshHint *int64            `json:"spiffe_refresh_hint,omitempty"`
	}{Keys: make([]json.RawMessage, 0, len(keys))}
	for _, k := range keys {
		out.Keys = append(out.Keys, k.raw)
	}
	if b.Sequence != 0 {
		s := b.Sequence
		out.Sequence = &s
	}
	if b.RefreshHint != 0 {
		h := int64((b.RefreshHint + time.Second - 1) / time.Second)
		out.RefreshHint = &h
	}
	return json.Marshal(out)
}

// SameContent reports whether two bundles trust the same roots and keys.
func (b *Bundle) SameContent(o *Bundle) bool {
	return b != nil && o != nil && b.digest == o.digest
}

// EarliestExpiry is the earliest NotAfter of the roots (zero when there is none).
func (b *Bundle) EarliestExpiry() time.Time {
	var t time.Time
	for _, r := range b.X509Roots {
		if t.IsZero() || r.NotAfter.Before(t) {
			t = r.NotAfter
		}
	}
	return t
}
