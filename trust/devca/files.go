package devca

import (
	"crypto/x509"
	"errors"
	"os"
	"time"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/trust"
)

// Fields that the errors of InitAll, IssueFiles and NewRootFiles name (each a
// *validate.FieldError, alone or joined); a command maps them to its flags.
const (
	FieldTrustDomain  = "trust domain"
	FieldSVIDTTL      = "SVID TTL"
	FieldRootValidity = "root validity"
	FieldSPIFFEID     = "SPIFFE ID"
	FieldFiles        = "certificate/key files"
)

// InitAll creates the CA of each trust domain under dir (Init: an existing one is kept).
// Unlike Init it takes no defaults: opts.SVIDTTL must be at least 1s and opts.RootValidity
// at least 24h (a command passes its own defaults). Every problem is reported at once.
func InitAll(dir string, tds []string, opts Options) ([]*CA, error) {
	var errs validate.Errors
	if len(tds) == 0 {
		errs.Add(FieldTrustDomain, "give at least one trust domain")
	}
	for _, td := range tds {
		if _, err := trust.ParseTrustDomain(td); err != nil {
			errs.Add(FieldTrustDomain, "%v", err)
		}
	}
	if opts.SVIDTTL < time.Second {
		errs.Add(FieldSVIDTTL, "%v: at least 1s", opts.SVIDTTL)
	}
	if opts.RootValidity < 24*time.Hour {
		errs.Add(FieldRootValidity, "%v: at least 24h", opts.RootValidity)
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	var out []*CA
	for _, td := range tds {
		ca, err := Init(dir, td, opts)
		if err != nil {
			return out, err
		}
		out = append(out, ca)
	}
	return out, nil
}

// IssueFilesRequest is an SVID from the CA of TrustDomain under Dir, written to files.
type IssueFilesRequest struct {
	Dir, TrustDomain string
	IssueRequest
	// Cert and Key receive the SVID (PEM; the key mode 0600); Bundle, when set, the trust
	// domain's roots (PEM).
	Cert, Key, Bundle string
}

// IssueFiles issues the SVID of r and writes its files.
func IssueFiles(r IssueFilesRequest) (*SVID, error) {
	var errs validate.Errors
	if r.TrustDomain == "" {
		errs.Add(FieldTrustDomain, "required")
	}
	if r.ID == "" {
		errs.Add(FieldSPIFFEID, "required, e.g. spiffe://%s/ns/default/sa/demo", r.TrustDomain)
	}
	if r.Cert == "" || r.Key == "" {
		errs.Add(FieldFiles, "give both output files")
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	ca, err := Open(r.Dir, r.TrustDomain)
	if err != nil {
		return nil, err
	}
	svid, err := ca.Issue(r.IssueRequest)
	if idErr := (*IDError)(nil); errors.As(err, &idErr) {
		return nil, &validate.FieldError{Field: FieldSPIFFEID, Msg: err.Error()}
	} else if err != nil {
		return nil, err
	}
	if err := svid.WriteFiles(r.Cert, r.Key); err != nil {
		return nil, err
	}
	if r.Bundle != "" {
		roots, err := ca.Roots()
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(r.Bundle, trust.CertsPEM(roots), 0o644); err != nil {
			return nil, err
		}
	}
	return svid, nil
}

// NewRootFiles makes a new root for td (NewRoot, for a rotation) and writes its certificate
// to certPath (PEM) and its key to keyPath (mode 0600).
func NewRootFiles(td string, validity time.Duration, certPath, keyPath string) (*x509.Certificate, error) {
	if certPath == "" || keyPath == "" {
		return nil, &validate.FieldError{Field: FieldFiles, Msg: "give both output files"}
	}
	c, k, err := NewRoot(td, validity)
	if err != nil {
		return nil, err
	}
	if err := WriteKey(keyPath, k); err != nil {
		return nil, err
	}
	if err := os.WriteFile(certPath, trust.CertsPEM([]*x509.Certificate{c}), 0o644); err != nil {
		return nil, err
	}
	return c, nil
}
