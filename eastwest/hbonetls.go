package eastwest

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ALPNH2 is the only application protocol the HBONE listener speaks.
const ALPNH2 = "h2"

// HBONEConfig is the HBONE listener's identity and trust (Gateway.ServeHBONE).
type HBONEConfig struct {
	// Certificate returns this gateway's X.509 SVID (chain and key) for each handshake, so
	// that a rotated certificate is used without a restart.
	Certificate func() (*tls.Certificate, error)
	// Bundles holds the X.509 roots of the federated trust domains: a caller's SVID must
	// chain to the bundle of its own trust domain, and a trust domain without a bundle
	// here is not federated.
	Bundles x509bundle.Source
	// TrustDomains, when not empty, narrows the callers to these trust domains.
	TrustDomains []string
}

func (h *HBONEConfig) check() error {
	if h.Certificate == nil {
		return errors.New("HBONE needs this gateway's SVID (a certificate source)")
	}
	if h.Bundles == nil {
		return errors.New("HBONE needs the federated trust bundles to verify callers")
	}
	for _, td := range h.TrustDomains {
		if _, err := spiffeid.TrustDomainFromString(td); err != nil || strings.Contains(td, "/") {
			return fmt.Errorf("allowed trust domain %q: give a bare trust domain name such as east.example", td)
		}
	}
	return nil
}

// errUntrusted marks a caller certificate refused by verifyCaller.
type errUntrusted struct{ err error }

func (e errUntrusted) Error() string { return "untrusted HBONE caller: " + e.err.Error() }
func (e errUntrusted) Unwrap() error { return e.err }

// verifyCaller accepts an X.509 SVID that chains to the bundle of its own trust domain,
// when that trust domain is federated (in Bundles) and allowed.
func (h *HBONEConfig) verifyCaller(raw [][]byte) (spiffeid.ID, error) {
	id, _, err := x509svid.ParseAndVerify(raw, h.Bundles)
	if err != nil {
		return spiffeid.ID{}, errUntrusted{err}
	}
	if len(h.TrustDomains) > 0 && !slices.Contains(h.TrustDomains, id.TrustDomain().Name()) {
		return spiffeid.ID{}, errUntrusted{fmt.Errorf("%s: trust domain %s is not among the allowed ones (%s)", id, id.TrustDomain(), strings.Join(h.TrustDomains, ", "))}
	}
	return id, nil
}

// tlsConfig is the HBONE listener's server configuration: TLS 1.3 (what ztunnel speaks),
// ALPN h2 only, a client certificate required and verified as an SVID; no SNI needed
// (callers dial the gateway by address).
func (h *HBONEConfig) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{ALPNH2},
		ClientAuth: tls.RequireAnyClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c, err := h.Certificate()
			if err != nil {
				return nil, fmt.Errorf("HBONE certificate: %w", err)
			}
			return c, nil
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := h.verifyCaller(raw)
			return err
		},
	}
}

// handshakeReason classifies a failed HBONE handshake for the rejection counter.
func handshakeReason(err error) string {
	var u errUntrusted
	switch {
	case errors.As(err, &u):
		return ReasonUntrustedClient
	case strings.Contains(err.Error(), "didn't provide a certificate"):
		return ReasonNoClientCert
	}
	return ReasonHandshake
}
