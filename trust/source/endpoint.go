package source

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/meshfed/meshfed/internal/ctxtime"
	"github.com/meshfed/meshfed/trust"
)

// Endpoint polls a SPIFFE bundle endpoint. It does its own HTTP GET and parse instead of
// go-spiffe's federation.FetchBundle, which ignores the HTTP status (a 404 page of
// {"keys":[]} would parse as an empty bundle). A non-200 answer, an empty or invalid
// bundle, or a spiffe_sequence lower than the last good one (or equal with other content)
// is an error that keeps the last good bundle.
type Endpoint struct {
	*tracker
	cfg    EndpointConfig
	td     spiffeid.TrustDomain
	client *http.Client

	mu         sync.Mutex
	auth       *x509bundle.Bundle // https_spiffe: authenticates the endpoint
	lastSeq    uint64
	lastDigest string
}

// NewEndpoint makes an endpoint source (reading ca= and bundle= files now, so a typo fails
// at start).
func NewEndpoint(cfg EndpointConfig, opts Options) (*Endpoint, error) {
	td, err := trust.ParseTrustDomain(cfg.TrustDomain)
	if err != nil {
		return nil, err
	}
	e := &Endpoint{tracker: newTracker("endpoint", opts.Log, opts.Metrics), cfg: cfg, td: td}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // the endpoint is reached directly (the spec authenticates the server, not a proxy)
	switch cfg.Profile {
	case ProfileWeb:
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAPath != "" {
			pemBytes, err := os.ReadFile(cfg.CAPath)
			if err != nil {
				return nil, fmt.Errorf("endpoint ca=%s: %w", cfg.CAPath, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pemBytes) {
				return nil, fmt.Errorf("endpoint ca=%s: no PEM certificate", cfg.CAPath)
			}
			tc.RootCAs = pool
		}
		tr.TLSClientConfig = tc
	case ProfileSPIFFE:
		data, err := os.ReadFile(cfg.BundlePath)
		if err != nil {
			return nil, fmt.Errorf("endpoint bundle=%s: %w", cfg.BundlePath, err)
		}
		idTD := cfg.ID.TrustDomain()
		b, err := trust.Parse(idTD.Name(), data, trust.ParseOptions{DropExpired: true})
		if err != nil {
			return nil, fmt.Errorf("endpoint bundle=%s: %w", cfg.BundlePath, err)
		}
		e.auth = b.X509Bundle()
		tr.TLSClientConfig = tlsconfig.TLSClientConfig(authSource{e}, tlsconfig.AuthorizeID(cfg.ID))
	}
	e.client = &http.Client{Transport: tr, Timeout: 15 * time.Second,
		// A bundle endpoint answers directly; a redirect would move trust elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return e, nil
}

func (e *Endpoint) String() string { return "endpoint:" + e.cfg.URL + " (" + e.cfg.Profile + ")" }

// authSource lets go-spiffe's verifier read the current authenticating bundle.
type authSource struct{ e *Endpoint }

func (a authSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return a.e.authBundle(td)
}

func (e *Endpoint) authBundle(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.auth == nil || e.auth.TrustDomain() != td {
		return nil, fmt.Errorf("no bundle to authenticate a server of trust domain %q", td.Name())
	}
	return e.auth, nil
}

// Run implements Source.
func (e *Endpoint) Run(ctx context.Context, update func(*trust.Bundle)) error {
	for ctx.Err() == nil {
		b, err := e.Fetch(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			e.fail(err)
		} else if e.good(b) {
			update(b)
		}
		if !ctxtime.Sleep(ctx, e.interval()) {
			break
		}
	}
	return nil
}

func (e *Endpoint) interval() time.Duration {
	if e.cfg.Refresh > 0 {
		return e.cfg.Refresh
	}
	d := 5 * time.Minute
	if last := e.Status().Last; last != nil && last.RefreshHint > 0 {
		d = last.RefreshHint
	}
	// A failed fetch is retried sooner than the hint, but never in a tight loop.
	if e.Status().LastError != nil && d > 30*time.Second {
		d = 30 * time.Second
	}
	return min(max(d, time.Second), time.Hour)
}

// Fetch gets and validates the bundle once (without updating the last good one unless it
// passes every check).
func (e *Endpoint) Fetch(ctx context.Context) (*trust.Bundle, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.cfg.URL, http.NoBody)
	if err != nil {
		return nil, fmt.Errorf("bundle endpoint %s: %w", e.cfg.URL, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := e.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("bundle endpoint %s: %w", e.cfg.URL, err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(resp.Body, trust.MaxBundleBytes+1)); err != nil {
		return nil, fmt.Errorf("bundle endpoint %s: read: %w", e.cfg.URL, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("bundle endpoint %s answered HTTP %d: not a bundle (go-spiffe's FetchBundle would have taken the body)", e.cfg.URL, resp.StatusCode)
	}
	b, err := trust.Parse(e.cfg.TrustDomain, buf.Bytes(), trust.ParseOptions{DropExpired: true})
	if err != nil {
		return nil, fmt.Errorf("bundle endpoint %s: %w", e.cfg.URL, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if b.Sequence != 0 && e.lastSeq != 0 {
		if b.Sequence < e.lastSeq {
			return nil, fmt.Errorf("bundle endpoint %s: spiffe_sequence went backwards (%d after %d): refusing a replayed or rolled-back bundle", e.cfg.URL, b.Sequence, e.lastSeq)
		}
		if b.Sequence == e.lastSeq && e.lastDigest != b.Digest() {
			return nil, fmt.Errorf("bundle endpoint %s: content changed but spiffe_sequence stayed %d: refusing it (the SPIFFE spec requires a new sequence)", e.cfg.URL, b.Sequence)
		}
	}
	if b.Sequence != 0 {
		e.lastSeq, e.lastDigest = b.Sequence, b.Digest()
	}
	// Per the SPIFFE federation spec, once fetched, the endpoint's own trust domain bundle
	// authenticates the next fetch.
	if e.cfg.Profile == ProfileSPIFFE && e.cfg.ID.TrustDomain() == e.td {
		e.auth = b.X509Bundle()
	}
	return b, nil
}

var _ Source = (*Endpoint)(nil)
