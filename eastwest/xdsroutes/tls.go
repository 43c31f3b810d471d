package xdsroutes

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// TLSFiles describes the xDS connection's TLS as files, read at every handshake so that
// rotated certificates are picked up without a restart (a handshake happens once per
// connection to the federation: rarely).
type TLSFiles struct {
	// CA is the PEM bundle the federation's certificate must chain to (required).
	CA string
	// Cert and Key are this gateway's client certificate and key (PEM), for mTLS; both or
	// neither.
	Cert, Key string
	// ServerName is what the federation's certificate must name: a DNS name (default: the
	// host of the address), or a SPIFFE ID ("spiffe://<trust domain>/<path>") matched
	// against the certificate's URI SAN.
	ServerName string
}

// Config builds the client TLS configuration for the federation at address (HOST:PORT).
func (f TLSFiles) Config(host string) (*tls.Config, error) {
	if f.CA == "" {
		return nil, errors.New("a CA bundle is required to verify the federation")
	}
	if (f.Cert == "") != (f.Key == "") {
		return nil, errors.New("give both the client certificate and its key, or neither")
	}
	// Read everything once now, so that a wrong path fails at start, not at the first
	// connection.
	if _, err := f.roots(); err != nil {
		return nil, err
	}
	if f.Cert != "" {
		if _, err := tls.LoadX509KeyPair(f.Cert, f.Key); err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
	}
	name := f.ServerName
	if name == "" {
		name = host
	}
	var spiffeID *url.URL
	if strings.HasPrefix(name, "spiffe://") {
		u, err := url.Parse(name)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("server name %q is not a SPIFFE ID", name)
		}
		spiffeID = u
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verification is done below against the CA file as it is now.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the federation sent no certificate")
			}
			roots, err := f.roots()
			if err != nil {
				return err
			}
			opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			leaf := cs.PeerCertificates[0]
			if spiffeID == nil {
				opts.DNSName = name
			}
			if _, err := leaf.Verify(opts); err != nil {
				return fmt.Errorf("federation certificate: %w", err)
			}
			if spiffeID != nil {
				for _, u := range leaf.URIs {
					if u.String() == spiffeID.String() {
						return nil
					}
				}
				return fmt.Errorf("federation certificate does not name %s", spiffeID)
			}
			return nil
		},
	}
	if spiffeID == nil {
		cfg.ServerName = name
	}
	if f.Cert != "" {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(f.Cert, f.Key)
			if err != nil {
				return nil, fmt.Errorf("client certificate: %w", err)
			}
			return &c, nil
		}
	}
	return cfg, nil
}

func (f TLSFiles) roots() (*x509.CertPool, error) {
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA bundle %s: no PEM certificate in it", f.CA)
	}
	return pool, nil
}
