package xds

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSFiles describes the xDS listener's TLS as PEM files. They are read again at every
// handshake, so certificates rotated on disk (cert-manager, a SPIRE helper, a Kubernetes
// Secret volume) are served without a restart; xDS clients hold one long-lived stream, so
// handshakes are rare.
type TLSFiles struct {
	// Cert and Key are the server certificate chain and key (required).
	Cert, Key string
	// ClientCA, when set, turns on mTLS: every client (Envoy, proxyless gRPC, gateway) must
	// present a certificate that chains to this PEM bundle.
	ClientCA string
}

// ServerConfig builds the listener's TLS configuration. Every file is read once here, so a
// wrong path or a bad file fails at start rather than at the first client.
func (f TLSFiles) ServerConfig() (*tls.Config, error) {
	if f.Cert == "" || f.Key == "" {
		return nil, errors.New("TLS needs both a certificate and its key")
	}
	if _, err := f.load(); err != nil {
		return nil, err
	}
	base := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c, err := f.load()
		if err != nil {
			// The files are broken now (mid-rotation, say): refuse this handshake and say
			// why in the server's log rather than serve a stale identity forever.
			return nil, fmt.Errorf("xds tls: %w", err)
		}
		return c, nil
	}
	return base, nil
}

func (f TLSFiles) load() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("certificate %s / key %s: %w", f.Cert, f.Key, err)
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}, Certificates: []tls.Certificate{cert}}
	if f.ClientCA != "" {
		pemBytes, err := os.ReadFile(f.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("client CA %s: no PEM certificate in it", f.ClientCA)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c, nil
}
