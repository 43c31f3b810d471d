package devca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshfed/meshfed/internal/atomicfile"
	"github.com/meshfed/meshfed/trust"
)

// Defaults.
const (
	DefaultRootValidity = 365 * 24 * time.Hour
	DefaultSVIDTTL      = time.Hour
)

// Options of a new CA.
type Options struct {
	// RootValidity of the first root (default one year).
	RootValidity time.Duration
	// SVIDTTL is the lifetime of issued SVIDs and the longest one an IssueRequest may ask
	// for (default one hour). A rotation waits at least this long after switching issuance.
	SVIDTTL time.Duration
}

type rootState struct {
	Fingerprint string    `json:"fingerprint"`
	Cert        string    `json:"cert"`
	Key         string    `json:"key"`
	Issuer      bool      `json:"issuer"`
	AddedAt     time.Time `json:"addedAt"`
}

type state struct {
	Version     int         `json:"version"`
	TrustDomain string      `json:"trustDomain"`
	SVIDTTL     int64       `json:"svidTTLMillis"`
	Roots       []rootState `json:"roots"`
}

// CA is the development CA of one trust domain.
type CA struct {
	dir string
	td  spiffeid.TrustDomain
}

// Init creates the CA of td under dir with a fresh root, or opens it when it exists
// (idempotent: running `meshfed trust dev-ca init` twice keeps the first root).
func Init(dir, td string, opts Options) (*CA, error) {
	tdID, err := trust.ParseTrustDomain(td)
	if err != nil {
		return nil, err
	}
	ca := &CA{dir: filepath.Join(dir, td), td: tdID}
	if _, err := os.Stat(ca.statePath()); err == nil {
		return ca, ca.check()
	}
	if opts.RootValidity <= 0 {
		opts.RootValidity = DefaultRootValidity
	}
	if opts.SVIDTTL <= 0 {
		opts.SVIDTTL = DefaultSVIDTTL
	}
	if err := os.MkdirAll(ca.dir, 0o700); err != nil {
		return nil, fmt.Errorf("dev CA %s: %w", td, err)
	}
	err = ca.withLock(func() error {
		if _, err := os.Stat(ca.statePath()); err == nil {
			return nil // another process created it meanwhile
		}
		cert, key, err := NewRoot(td, opts.RootValidity)
		if err != nil {
			return err
		}
		rs, err := ca.writeRoot(cert, key)
		if err != nil {
			return err
		}
		rs.Issuer = true
		return ca.saveState(&state{Version: 1, TrustDomain: td, SVIDTTL: opts.SVIDTTL.Milliseconds(), Roots: []rootState{rs}})
	})
	if err != nil {
		return nil, fmt.Errorf("dev CA %s: %w", td, err)
	}
	return ca, nil
}

// Open opens an existing CA of td under dir.
func Open(dir, td string) (*CA, error) {
	tdID, err := trust.ParseTrustDomain(td)
	if err != nil {
		return nil, err
	}
	ca := &CA{dir: filepath.Join(dir, td), td: tdID}
	if err := ca.check(); err != nil {
		return nil, err
	}
	return ca, nil
}

func (ca *CA) check() error {
	st, err := ca.loadState()
	if err != nil {
		return err
	}
	if st.TrustDomain != ca.td.Name() {
		return fmt.Errorf("dev CA %s: state.json is for trust domain %q", ca.dir, st.TrustDomain)
	}
	_, _, err = ca.issuer(st)
	return err
}

// TrustDomain is the CA's trust domain.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Dir is the CA's directory (DIR/<td>).
func (ca *CA) Dir() string { return ca.dir }

// SVIDTTL is the lifetime of the SVIDs this CA issues.
func (ca *CA) SVIDTTL() (time.Duration, error) {
	st, err := ca.loadState()
	if err != nil {
		return 0, err
	}
	return time.Duration(st.SVIDTTL) * time.Millisecond, nil
}

func (ca *CA) statePath() string { return filepath.Join(ca.dir, "state.json") }

func (ca *CA) loadState() (*state, error) {
	b, err := os.ReadFile(ca.statePath())
	if err != nil {
		return nil, fmt.Errorf("dev CA %s: %w (create it with `meshfed trust dev-ca init`)", ca.td.Name(), err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("dev CA %s: state.json: %w", ca.td.Name(), err)
	}
	if st.Version != 1 {
		return nil, fmt.Errorf("dev CA %s: state.json version %d: this meshfed reads version 1", ca.td.Name(), st.Version)
	}
	return &st, nil
}

func (ca *CA) saveState(st *state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(ca.statePath(), b, 0o600)
}

// withLock runs fn holding an exclusive lock on the CA directory.
func (ca *CA) withLock(fn func() error) error { return ca.lock(syscall.LOCK_EX, fn) }

// withReadLock runs fn holding a shared lock: a reader never sees state.json naming a root
// file that a concurrent RemoveRoot has just deleted.
func (ca *CA) withReadLock(fn func() error) error { return ca.lock(syscall.LOCK_SH, fn) }

func (ca *CA) lock(how int, fn func() error) error {
	f, err := os.OpenFile(filepath.Join(ca.dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		return fmt.Errorf("lock %s: %w", ca.dir, err)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing unlocks too
	return fn()
}

func shortFP(c *x509.Certificate) string {
	return strings.TrimPrefix(trust.Fingerprint(c), "sha256:")[:16]
}

func (ca *CA) writeRoot(cert *x509.Certificate, key crypto.Signer) (rootState, error) {
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return rootState{}, err
	}
	name := "root-" + shortFP(cert)
	rs := rootState{Fingerprint: trust.Fingerprint(cert), Cert: name + ".pem", Key: name + "-key.pem", AddedAt: time.Now().UTC()}
	if err := atomicfile.Write(filepath.Join(ca.dir, rs.Key), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return rootState{}, err
	}
	if err := atomicfile.Write(filepath.Join(ca.dir, rs.Cert), trust.CertsPEM([]*x509.Certificate{cert}), 0o644); err != nil {
		return rootState{}, err
	}
	return rs, nil
}

func (ca *CA) readRoot(rs rootState) (*x509.Certificate, crypto.Signer, error) {
	cert, err := ReadCert(filepath.Join(ca.dir, rs.Cert))
	if err != nil {
		return nil, nil, err
	}
	if trust.Fingerprint(cert) != rs.Fingerprint {
		return nil, nil, fmt.Errorf("dev CA %s: %s does not match its fingerprint in state.json", ca.td.Name(), rs.Cert)
	}
	key, err := ReadKey(filepath.Join(ca.dir, rs.Key))
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

func (ca *CA) issuer(st *state) (*x509.Certificate, crypto.Signer, error) {
	for _, rs := range st.Roots {
		if rs.Issuer {
			return ca.readRoot(rs)
		}
	}
	return nil, nil, fmt.Errorf("dev CA %s: no issuing root in state.json", ca.td.Name())
}

// Roots are the roots the CA trusts (during a rotation, old and new).
func (ca *CA) Roots() ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	err := ca.withReadLock(func() error {
		st, err := ca.loadState()
		if err != nil {
			return err
		}
		for _, rs := range st.Roots {
			c, err := ReadCert(filepath.Join(ca.dir, rs.Cert))
			if err != nil {
				return err
			}
			out = append(out, c)
		}
		return nil
	})
	return out, err
}

// Issuer is the root that issues SVIDs now.
func (ca *CA) Issuer() (*x509.Certificate, error) {
	var c *x509.Certificate
	err := ca.withReadLock(func() error {
		st, err := ca.loadState()
		if err != nil {
			return err
		}
		c, _, err = ca.issuer(st)
		return err
	})
	return c, err
}

// Bundle is the CA's trusted roots as a validated bundle (the dev bundle source).
func (ca *CA) Bundle(now time.Time) (*trust.Bundle, error) {
	roots, err := ca.Roots()
	if err != nil {
		return nil, err
	}
	return trust.Parse(ca.td.Name(), trust.CertsPEM(roots), trust.ParseOptions{Now: now})
}

// AddRoot adds a trusted, non-issuing root with its key (a rotation's new root). Adding a
// root that is already there changes nothing.
func (ca *CA) AddRoot(cert *x509.Certificate, key crypto.Signer) error {
	if err := CheckKeyPair(cert, key); err != nil {
		return err
	}
	return ca.withLock(func() error {
		st, err := ca.loadState()
		if err != nil {
			return err
		}
		fp := trust.Fingerprint(cert)
		for _, rs := range st.Roots {
			if rs.Fingerprint == fp {
				return nil
			}
		}
		rs, err := ca.writeRoot(cert, key)
		if err != nil {
			return err
		}
		st.Roots = append(st.Roots, rs)
		return ca.saveState(st)
	})
}

// SwitchIssuer makes the root with this fingerprint the issuing one (idempotent).
func (ca *CA) SwitchIssuer(fingerprint string) error {
	return ca.withLock(func() error {
		st, err := ca.loadState()
		if err != nil {
			return err
		}
		found := false
		for i := range st.Roots {
			st.Roots[i].Issuer = st.Roots[i].Fingerprint == fingerprint
			found = found || st.Roots[i].Issuer
		}
		if !found {
			return fmt.Errorf("dev CA %s: no root %s to switch issuance to", ca.td.Name(), fingerprint)
		}
		return ca.saveState(st)
	})
}

// RemoveRoot stops trusting the root with this fingerprint (idempotent). The issuing root
// cannot be removed.
func (ca *CA) RemoveRoot(fingerprint string) error {
	return ca.withLock(func() error {
		st, err := ca.loadState()
		if err != nil {
			return err
		}
		kept := st.Roots[:0]
		for _, rs := range st.Roots {
			if rs.Fingerprint != fingerprint {
				kept = append(kept, rs)
				continue
			}
			if rs.Issuer {
				return fmt.Errorf("dev CA %s: root %s still issues SVIDs: switch issuance first", ca.td.Name(), fingerprint)
			}
			_ = os.Remove(filepath.Join(ca.dir, rs.Key))
			_ = os.Remove(filepath.Join(ca.dir, rs.Cert))
		}
		if len(kept) == len(st.Roots) {
			return nil
		}
		st.Roots = kept
		return ca.saveState(st)
	})
}

// IssueRequest asks for an X509-SVID.
type IssueRequest struct {
	// ID is the SPIFFE ID (spiffe://<td>/...); it must be in the CA's trust domain.
	ID string
	// DNSNames are added as DNS SANs (gateways and the bundle endpoint's https_web use).
	DNSNames []string
	// TTL is the lifetime (default and maximum: the CA's SVID TTL).
	TTL time.Duration
}

// SVID is an issued X509-SVID: the leaf (no intermediates: the root signs directly) and key.
type SVID struct {
	ID    spiffeid.ID
	Chain []*x509.Certificate
	Key   crypto.Signer
}

// IDError is an IssueRequest.ID that the CA cannot sign for: not a SPIFFE ID, or not in
// its trust domain.
type IDError struct {
	ID  string
	Err error
}

func (e *IDError) Error() string { return fmt.Sprintf("SPIFFE ID %q: %v", e.ID, e.Err) }

func (e *IDError) Unwrap() error { return e.Err }

// Issue signs an SVID with the current issuing root.
func (ca *CA) Issue(req IssueRequest) (*SVID, error) {
	id, err := spiffeid.FromString(req.ID)
	if err != nil {
		return nil, &IDError{ID: req.ID, Err: err}
	}
	if id.TrustDomain() != ca.td {
		return nil, &IDError{ID: req.ID, Err: fmt.Errorf("not in trust domain %s", ca.td.Name())}
	}
	var st *state
	var issuer *x509.Certificate
	var ikey crypto.Signer
	err = ca.withReadLock(func() error {
		var err error
		if st, err = ca.loadState(); err != nil {
			return err
		}
		issuer, ikey, err = ca.issuer(st)
		return err
	})
	if err != nil {
		return nil, err
	}
	maxTTL := time.Duration(st.SVIDTTL) * time.Millisecond
	ttl := req.TTL
	if ttl <= 0 || ttl > maxTTL {
		ttl = maxTTL
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(ttl)
	if notAfter.After(issuer.NotAfter) {
		notAfter = issuer.NotAfter
	}
	u := id.URL()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{"meshfed dev"}},
		URIs:         []*url.URL{u},
		DNSNames:     req.DNSNames,
		// A minute back for clock skew between demo hosts.
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), ikey)
	if err != nil {
		return nil, fmt.Errorf("issue %s: %w", req.ID, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &SVID{ID: id, Chain: []*x509.Certificate{leaf}, Key: key}, nil
}

// TLSCertificate is the SVID as a tls.Certificate.
func (s *SVID) TLSCertificate() *tls.Certificate {
	c := &tls.Certificate{PrivateKey: s.Key, Leaf: s.Chain[0]}
	for _, x := range s.Chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// WriteFiles writes the chain and key as PEM (atomically, key mode 0600).
func (s *SVID) WriteFiles(certPath, keyPath string) error {
	kder, err := x509.MarshalPKCS8PrivateKey(s.Key)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return atomicfile.Write(certPath, trust.CertsPEM(s.Chain), 0o644)
}

// Keep issues an SVID now and again whenever half of its lifetime has passed or the CA's
// issuing root changed (a rotation), calling onIssue with each, until ctx ends. poll bounds
// how late an issuer switch is noticed (default one second).
func (ca *CA) Keep(ctx context.Context, req IssueRequest, poll time.Duration, onIssue func(*SVID) error) error {
	if poll <= 0 {
		poll = time.Second
	}
	var cur *SVID
	var renewAt time.Time
	for {
		issuer, err := ca.Issuer()
		if err == nil && (cur == nil || !sameIssuer(cur, issuer) || time.Now().After(renewAt)) {
			issued := time.Now()
			svid, ierr := ca.Issue(req)
			if ierr == nil {
				ierr = onIssue(svid)
			}
			if ierr == nil {
				// Half of the lifetime from issuance (NotBefore is back-dated for skew).
				cur, renewAt = svid, issued.Add(svid.Chain[0].NotAfter.Sub(issued)/2)
			}
			err = ierr
		}
		_ = err // reported by the next successful issue; Keep never gives up while ctx lives
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func sameIssuer(s *SVID, issuer *x509.Certificate) bool {
	return s.Chain[0].CheckSignatureFrom(issuer) == nil
}

// NewRoot makes a self-signed root CA certificate for td (ECDSA P-256), valid from a
// minute ago for validity.
func NewRoot(td string, validity time.Duration) (*x509.Certificate, crypto.Signer, error) {
	tdID, err := trust.ParseTrustDomain(td)
	if err != nil {
		return nil, nil, err
	}
	return newRootAt(tdID, time.Now().Add(-time.Minute), validity)
}

// NewRootAt is NewRoot with an explicit start (tests make expired or future roots).
func NewRootAt(td string, notBefore time.Time, validity time.Duration) (*x509.Certificate, crypto.Signer, error) {
	tdID, err := trust.ParseTrustDomain(td)
	if err != nil {
		return nil, nil, err
	}
	return newRootAt(tdID, notBefore, validity)
}

func newRootAt(td spiffeid.TrustDomain, notBefore time.Time, validity time.Duration) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tdURL := td.ID().URL()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"meshfed dev CA"}, CommonName: "meshfed dev root " + td.Name() + " " + notBefore.UTC().Format("20060102T150405")},
		URIs:                  []*url.URL{tdURL},
		NotBefore:             notBefore,
		NotAfter:              notBefore.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n.Add(n, big.NewInt(1))
}

// ReadCert reads the first certificate of a PEM file.
func ReadCert(path string) (*x509.Certificate, error) {
	certs, err := ReadCerts(path)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// ReadCerts reads every certificate of a PEM file.
func ReadCerts(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no PEM CERTIFICATE block", path)
	}
	return out, nil
}

// ReadKey reads a PEM private key (PKCS #8, SEC 1 EC or PKCS #1 RSA).
func ReadKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	var k any
	switch blk.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("%s: PEM block %q is not a private key", path, blk.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: key type %T cannot sign", path, k)
	}
	return s, nil
}

// WriteKey writes a private key as PKCS #8 PEM (mode 0600).
func WriteKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// CheckKeyPair reports whether key is the private key of cert.
func CheckKeyPair(cert *x509.Certificate, key crypto.Signer) error {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	pub, ok := key.Public().(equaler)
	if !ok || !pub.Equal(cert.PublicKey) {
		return errors.New("not the key of the new CA certificate: give the key the certificate was made for")
	}
	return nil
}
