package clientid

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/meshfed/meshfed/trust/devca"
)

// Options says where the identity comes from; the first source set wins: files, the
// Workload API, the development CA.
type Options struct {
	// CertFile and KeyFile are a PEM certificate chain and its key.
	CertFile, KeyFile string
	// WorkloadAPI is the SPIFFE Workload API address (unix:///path or tcp://host:port).
	WorkloadAPI string
	// DevCADir is a development CA directory (one subdirectory per trust domain); an
	// SVID of TrustDomain is minted from it when it holds that trust domain's CA.
	DevCADir string
	// TrustDomain is the trust domain whose SVID the development CA mints.
	TrustDomain string
	// ID is the SPIFFE ID to mint (default spiffe://<TrustDomain>/ns/meshfed-system/sa/meshfed-drill).
	ID string
	// TTL of a minted SVID (default 1h, capped by the CA).
	TTL time.Duration
	// Roots verify servers, by trust domain; nil: servers are not verified.
	Roots map[string]*x509.CertPool
	// WorkloadAPITimeout bounds the wait for the first SVID from the Workload API (default 10s).
	WorkloadAPITimeout time.Duration
}

// Identity is a client identity and the server check.
type Identity struct {
	// Source says where the identity came from, for people ("none" when there is none).
	Source string
	// ID is the SPIFFE ID presented ("" when none, or the certificate has no SPIFFE ID).
	ID string

	cert  *tls.Certificate
	x509  *workloadapi.X509Source
	roots map[string]*x509.CertPool
}

// Load finds the identity. A source that is given but unusable is an error (a file that
// does not load, a Workload API that does not answer); a development CA directory without
// the trust domain's CA is not (that source is the fallback of local use).
func Load(ctx context.Context, o Options) (*Identity, error) {
	id := &Identity{Source: "none", roots: o.Roots}
	switch {
	case o.CertFile != "" || o.KeyFile != "":
		if o.CertFile == "" || o.KeyFile == "" {
			return nil, errors.New("a client certificate needs both the certificate file and the key file")
		}
		c, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate %s, key %s: %w", o.CertFile, o.KeyFile, err)
		}
		id.cert, id.Source = &c, "files "+o.CertFile
		if leaf, err := x509.ParseCertificate(c.Certificate[0]); err == nil {
			if sid, err := x509svid.IDFromCert(leaf); err == nil {
				id.ID = sid.String()
			}
		}
	case o.WorkloadAPI != "":
		wait := o.WorkloadAPITimeout
		if wait <= 0 {
			wait = 10 * time.Second
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		src, err := workloadapi.NewX509Source(wctx, workloadapi.WithClientOptions(workloadapi.WithAddr(o.WorkloadAPI)))
		if err != nil {
			return nil, fmt.Errorf("SPIFFE Workload API %s: no X509-SVID within %v: %w", o.WorkloadAPI, wait, err)
		}
		svid, err := src.GetX509SVID()
		if err != nil {
			src.Close()
			return nil, fmt.Errorf("SPIFFE Workload API %s: %w", o.WorkloadAPI, err)
		}
		id.x509, id.ID, id.Source = src, svid.ID.String(), "workload API "+o.WorkloadAPI
	case o.DevCADir != "" && o.TrustDomain != "":
		if _, err := os.Stat(filepath.Join(o.DevCADir, o.TrustDomain)); err != nil {
			return id, nil
		}
		ca, err := devca.Open(o.DevCADir, o.TrustDomain)
		if err != nil {
			return nil, fmt.Errorf("development CA of %s in %s: %w", o.TrustDomain, o.DevCADir, err)
		}
		want := o.ID
		if want == "" {
			want = "spiffe://" + o.TrustDomain + "/ns/meshfed-system/sa/meshfed-drill"
		}
		ttl := o.TTL
		if ttl <= 0 {
			ttl = time.Hour
		}
		svid, err := ca.Issue(devca.IssueRequest{ID: want, TTL: ttl})
		if err != nil {
			return nil, fmt.Errorf("development CA of %s in %s: %w", o.TrustDomain, o.DevCADir, err)
		}
		id.cert, id.ID, id.Source = svid.TLSCertificate(), svid.ID.String(), "development CA "+filepath.Join(o.DevCADir, o.TrustDomain)
	}
	return id, nil
}

// Close releases a Workload API source.
func (i *Identity) Close() {
	if i != nil && i.x509 != nil {
		i.x509.Close()
	}
}

// HasCert reports whether the client presents a certificate.
func (i *Identity) HasCert() bool { return i.cert != nil || i.x509 != nil }

// ClientTLS is the client configuration: the identity as client certificate, and the
// server checked by VerifyPeer (the server name is the route's SNI, not the workload's
// identity, so Go's host name check is replaced by the SPIFFE one).
func (i *Identity) ClientTLS() *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12,
		InsecureSkipVerify: true, // VerifyConnection checks the chain and the SPIFFE ID
		VerifyConnection:   i.VerifyPeer,
	}
	switch {
	case i.x509 != nil:
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			s, err := i.x509.GetX509SVID()
			if err != nil {
				return nil, err
			}
			c := &tls.Certificate{PrivateKey: s.PrivateKey, Leaf: s.Certificates[0]}
			for _, x := range s.Certificates {
				c.Certificate = append(c.Certificate, x.Raw)
			}
			return c, nil
		}
	case i.cert != nil:
		c := i.cert
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return c, nil }
	}
	return cfg
}

// VerifyPeer checks the server's chain against the bundle of the trust domain its SPIFFE
// ID names (nothing, without roots).
func (i *Identity) VerifyPeer(cs tls.ConnectionState) error {
	if i.roots == nil {
		return nil
	}
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the server sent no certificate")
	}
	leaf := cs.PeerCertificates[0]
	sid, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return fmt.Errorf("the server's certificate has no SPIFFE ID: %w", err)
	}
	pool := i.roots[sid.TrustDomain().Name()]
	if pool == nil {
		return fmt.Errorf("server %s: no trust bundle of %s in the clusterset", sid, sid.TrustDomain().Name())
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("server %s: not signed by the bundle of %s: %w", sid, sid.TrustDomain().Name(), err)
	}
	return nil
}

// PeerID is the SPIFFE ID of the server's certificate, if it has one.
func PeerID(cs tls.ConnectionState) (spiffeid.ID, bool) {
	if len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, false
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	return id, err == nil
}
