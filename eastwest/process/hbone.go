package process

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/meshfed/meshfed/eastwest"
	"github.com/meshfed/meshfed/internal/bundlemap"
	"github.com/meshfed/meshfed/internal/certexpiry"
	"github.com/meshfed/meshfed/internal/reloadfile"
)

// HBONE is the gateway's HBONE listener (Istio ambient's double HBONE; docs/eastwest.md).
type HBONE struct {
	// Listen is HOST:PORT of the HBONE listener (Istio's port is 15008).
	Listen string
	// CertFile and KeyFile are this gateway's X.509 SVID (PEM), re-read when they change;
	// or SPIFFESocket gives it.
	CertFile, KeyFile string
	// SPIFFESocket is the SPIFFE Workload API socket (a path, or unix:///path): the SVID,
	// and the federated bundles when BundleDir is empty.
	SPIFFESocket string
	// BundleDir is the directory `meshfed federation --bundle-dir` writes (its
	// bundle-map.json): the federated trust domains callers may come from.
	BundleDir string
	// AllowTrustDomains, when not empty, narrows the callers to these trust domains.
	AllowTrustDomains []string
}

// The parts of an HBONE configuration Start reports errors about.
const (
	PartHBONECert    Part = "HBONE certificate"
	PartHBONEBundles Part = "HBONE bundles"
	PartHBONEListen  Part = "HBONE listen"
)

// hboneSetup is what Start made for HBONE: the gateway's configuration, the certificate
// files to watch for expiry, and what to close at the end.
type hboneSetup struct {
	cfg   *eastwest.HBONEConfig
	certs []certexpiry.CertFile
	close func()
}

// setup builds the HBONE identity and trust. A Workload API source is waited for (its
// first SVID) within ctx.
func (h *HBONE) setup(ctx context.Context, logf func(msg string, args ...any)) (*hboneSetup, error) {
	s := &hboneSetup{cfg: &eastwest.HBONEConfig{TrustDomains: h.AllowTrustDomains}, close: func() {}}
	files := h.CertFile != "" || h.KeyFile != ""
	switch {
	case files && (h.CertFile == "" || h.KeyFile == ""):
		return nil, &Error{PartHBONECert, errors.New("give both the certificate and its key")}
	case files && h.SPIFFESocket != "":
		return nil, &Error{PartHBONECert, errors.New("the SVID comes from files or from the Workload API, not both")}
	case !files && h.SPIFFESocket == "":
		return nil, &Error{PartHBONECert, errors.New("HBONE needs this gateway's SVID: certificate and key files, or the Workload API")}
	case h.BundleDir == "" && h.SPIFFESocket == "":
		return nil, &Error{PartHBONEBundles, errors.New("HBONE needs the federated bundles: the federation's bundle directory, or the Workload API")}
	}
	var src *workloadapi.X509Source
	if h.SPIFFESocket != "" {
		addr := h.SPIFFESocket
		if !strings.Contains(addr, "://") {
			addr = "unix://" + addr
		}
		var err error
		src, err = workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(addr)))
		if err != nil {
			return nil, &Error{PartHBONECert, fmt.Errorf("workload API %s: %w", addr, err)}
		}
		s.close = func() { _ = src.Close() }
	}
	fail := func(p Part, err error) (*hboneSetup, error) {
		s.close()
		return nil, &Error{p, err}
	}
	if files {
		kp, err := reloadfile.KeyPair(h.CertFile, h.KeyFile, reloadfile.Options{OnReload: func(err error) {
			if err != nil {
				logf("HBONE certificate reload failed; keeping the last one", "err", err)
			}
		}})
		if err != nil {
			return fail(PartHBONECert, err)
		}
		s.cfg.Certificate = kp.Get
		s.certs = append(s.certs, certexpiry.CertFile{Name: "gateway-hbone", Path: h.CertFile})
	} else {
		get := tlsconfig.GetCertificate(src)
		s.cfg.Certificate = func() (*tls.Certificate, error) { return get(nil) }
	}
	if h.BundleDir != "" {
		d, err := bundlemap.OpenDir(h.BundleDir, reloadfile.Options{OnReload: func(err error) {
			if err != nil {
				logf("bundle map reload failed; keeping the last one", "err", err)
			}
		}})
		if err != nil {
			return fail(PartHBONEBundles, err)
		}
		s.cfg.Bundles = d
	} else {
		s.cfg.Bundles = x509bundle.Source(src)
	}
	return s, nil
}
