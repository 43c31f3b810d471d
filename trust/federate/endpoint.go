package federate

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/internal/reloadfile"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/devca"
)

// EndpointConfig is the SPIFFE bundle endpoint this cluster serves: GET / answers the
// cluster's own trust domain's bundle, GET /<td> any trust domain of the federated set,
// with the sequence and refresh hint of the record (the SPIFFE federation spec: no client
// authentication).
type EndpointConfig struct {
	// Addr is HOST:PORT (port 0: a free port; see Service.EndpointAddr).
	Addr string
	// CertFile and KeyFile are the serving certificate: a Web PKI certificate (fetchers
	// use profile https_web) or an SVID (https_spiffe). Re-read when the files change.
	CertFile, KeyFile string
	// DevCADir, instead of files, serves an SVID spiffe://<td>/meshfed/bundle-endpoint
	// issued by the development CA and renewed by itself (fetchers use https_spiffe).
	DevCADir string
	// DNSNames go into the dev SVID (for fetchers that also check the host name).
	DNSNames []string
}

// EndpointSVIDPath is the path of the SPIFFE ID of the dev-CA-issued endpoint certificate.
const EndpointSVIDPath = "/meshfed/bundle-endpoint"

type endpointServer struct {
	s   *Service
	cfg EndpointConfig
	cur atomic.Pointer[trust.Set]

	files *reloadfile.File[*tls.Certificate] // CertFile and KeyFile, when given

	mu   sync.Mutex
	cert *tls.Certificate // the dev CA's, renewed by itself
	ln   net.Listener
}

func newEndpointServer(s *Service, cfg EndpointConfig) (*endpointServer, error) {
	if cfg.Addr == "" {
		return nil, &validate.FieldError{Field: FieldEndpoint, Msg: "give HOST:PORT"}
	}
	hasFiles := cfg.CertFile != "" || cfg.KeyFile != ""
	switch {
	case hasFiles && (cfg.CertFile == "" || cfg.KeyFile == ""):
		return nil, &validate.FieldError{Field: FieldEndpointCertKey, Msg: "give both"}
	case !hasFiles && cfg.DevCADir == "":
		return nil, &validate.FieldError{Field: FieldEndpointCertKey, Msg: "the bundle endpoint needs a serving certificate and key, or the dev CA (the dev bundle source)"}
	case !hasFiles && s.cfg.TrustDomain == "":
		return nil, &validate.FieldError{Field: FieldTrustDomain, Msg: "the bundle endpoint with the dev CA needs the trust domain"}
	}
	e := &endpointServer{s: s, cfg: cfg}
	if hasFiles {
		f, err := reloadfile.KeyPair(cfg.CertFile, cfg.KeyFile, reloadfile.Options{OnReload: func(err error) {
			if err != nil {
				s.log.Error("bundle endpoint certificate reload failed; keeping the last one", "err", err)
			}
		}})
		if err != nil {
			return nil, &validate.FieldError{Field: FieldEndpointCertKey, Msg: err.Error()}
		}
		e.files = f
	}
	return e, nil
}

func (e *endpointServer) set(set *trust.Set) { e.cur.Store(set) }

// Addr is the bound address once listening.
func (e *endpointServer) Addr() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ln == nil {
		return ""
	}
	return e.ln.Addr().String()
}

// GetBundleForTrustDomain implements spiffebundle.Source over the current set: the
// record's bundle with its sequence and refresh hint (go-spiffe's workloadapi
// BundleSource would drop both).
func (e *endpointServer) GetBundleForTrustDomain(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	set := e.cur.Load()
	if set == nil {
		return nil, errors.New("no bundles synced yet")
	}
	return set.GetBundleForTrustDomain(td)
}

func (e *endpointServer) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.Trim(r.URL.Path, "/")
		if name == "" {
			name = e.s.cfg.TrustDomain
		}
		td, err := trust.ParseTrustDomain(name)
		if err != nil || name == "" {
			http.Error(w, "unknown trust domain: GET / for this cluster's bundle, /<trust-domain> for another", http.StatusNotFound)
			return
		}
		if set := e.cur.Load(); set == nil {
			http.Error(w, "bundles not synced yet", http.StatusServiceUnavailable)
			return
		} else if _, ok := set.Get(td.Name()); !ok {
			// A 404 with no JSON body: a fetcher must never mistake it for an empty bundle.
			http.Error(w, "no bundle for trust domain "+td.Name(), http.StatusNotFound)
			return
		}
		h, err := federation.NewHandler(td, e)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

func (e *endpointServer) run(ctx context.Context) error {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ClientAuth: tls.NoClientCert}
	if e.cfg.CertFile != "" {
		tc.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return e.files.Get() }
	} else {
		ca, err := devca.Init(e.cfg.DevCADir, e.s.cfg.TrustDomain, devca.Options{})
		if err != nil {
			return fmt.Errorf("bundle endpoint: %w", err)
		}
		id := "spiffe://" + e.s.cfg.TrustDomain + EndpointSVIDPath
		go func() {
			_ = ca.Keep(ctx, devca.IssueRequest{ID: id, DNSNames: e.cfg.DNSNames}, time.Second, func(s *devca.SVID) error {
				e.mu.Lock()
				e.cert = s.TLSCertificate()
				e.mu.Unlock()
				return nil
			})
		}()
		tc.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			e.mu.Lock()
			defer e.mu.Unlock()
			if e.cert == nil {
				return nil, errors.New("bundle endpoint certificate not issued yet")
			}
			return e.cert, nil
		}
	}
	ln, err := net.Listen("tcp", e.cfg.Addr)
	if err != nil {
		return fmt.Errorf("bundle endpoint %s: %w", e.cfg.Addr, err)
	}
	e.mu.Lock()
	e.ln = ln
	e.mu.Unlock()
	srv := &http.Server{Handler: e.handler(), TLSConfig: tc, ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, MaxHeaderBytes: 16 << 10}
	e.s.log.Info("SPIFFE bundle endpoint listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("bundle endpoint: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	}
}

var _ spiffebundle.Source = (*endpointServer)(nil)
