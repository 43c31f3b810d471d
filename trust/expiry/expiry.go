package expiry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/federation/records"
	"github.com/meshfed/meshfed/federation/store"
	"github.com/meshfed/meshfed/trust"
)

// WarnBefore is how long before expiry `meshfed status` warns.
const WarnBefore = 30 * 24 * time.Hour

var rootDesc = prometheus.NewDesc("meshfed_trust_root_expiry_seconds",
	"Seconds until each trust root of the federated set expires (negative: expired).",
	[]string{"trust_domain", "fingerprint", "subject"}, nil)

// RootCollector reports the expiry of every root of the current federated set at scrape time.
type RootCollector struct{ set func() *trust.Set }

// NewRootCollector collects over the set returned by set (which may return nil).
func NewRootCollector(set func() *trust.Set) *RootCollector { return &RootCollector{set: set} }

// Describe implements prometheus.Collector.
func (c *RootCollector) Describe(ch chan<- *prometheus.Desc) { ch <- rootDesc }

// Collect implements prometheus.Collector.
func (c *RootCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, b := range c.set().Bundles() {
		for _, r := range b.X509Roots {
			ch <- prometheus.MustNewConstMetric(rootDesc, prometheus.GaugeValue, r.NotAfter.Sub(now).Seconds(),
				b.TrustDomain.Name(), trust.Fingerprint(r), r.Subject.String())
		}
	}
}

var certDesc = prometheus.NewDesc("meshfed_cert_expiry_seconds",
	"Seconds until a certificate this process uses expires (negative: expired; -Inf: unreadable).",
	[]string{"cert", "path"}, nil)

// CertFile names a certificate file a component uses: Name is gateway, health, etcd-client,
// bundle-endpoint, ...
type CertFile struct {
	Name string
	Path string
}

// CertCollector reports the expiry of certificate files, read at scrape time so that a
// renewed file is seen without a restart. Get, if set, supplies in-memory certificates
// (for example SVIDs held by a process) under their names.
type CertCollector struct {
	files []CertFile
	get   func() map[string]*x509.Certificate
}

// NewCertCollector collects the expiry of files, and of what get returns (may be nil).
func NewCertCollector(get func() map[string]*x509.Certificate, files ...CertFile) *CertCollector {
	return &CertCollector{files: files, get: get}
}

// Describe implements prometheus.Collector.
func (c *CertCollector) Describe(ch chan<- *prometheus.Desc) { ch <- certDesc }

// Collect implements prometheus.Collector.
func (c *CertCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, f := range c.files {
		v := negInf
		if cert, err := ReadLeaf(f.Path); err == nil {
			v = cert.NotAfter.Sub(now).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(certDesc, prometheus.GaugeValue, v, f.Name, f.Path)
	}
	if c.get != nil {
		for name, cert := range c.get() {
			ch <- prometheus.MustNewConstMetric(certDesc, prometheus.GaugeValue, cert.NotAfter.Sub(now).Seconds(), name, "")
		}
	}
}

var negInf = math.Inf(-1)

// ReadLeaf reads the first certificate of a PEM file (the leaf of a chain).
func ReadLeaf(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for {
		var blk *pem.Block
		blk, data = pem.Decode(data)
		if blk == nil {
			return nil, fmt.Errorf("%s: no PEM certificate", path)
		}
		if blk.Type == "CERTIFICATE" {
			return x509.ParseCertificate(blk.Bytes)
		}
	}
}

// LeafOf is the leaf of a tls.Certificate (parsing it when Leaf is not set).
func LeafOf(c *tls.Certificate) (*x509.Certificate, error) {
	if c == nil || len(c.Certificate) == 0 {
		return nil, fmt.Errorf("no certificate")
	}
	if c.Leaf != nil {
		return c.Leaf, nil
	}
	return x509.ParseCertificate(c.Certificate[0])
}

// Warning is one certificate close to (or past) expiry.
type Warning struct {
	What     string // e.g. "root of b.example (sha256:ab12…)" or "etcd client certificate /etc/..."
	NotAfter time.Time
	Left     time.Duration
}

func (w Warning) String() string {
	if w.Left <= 0 {
		return fmt.Sprintf("%s EXPIRED %s ago (%s)", w.What, (-w.Left).Round(time.Minute), w.NotAfter.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("%s expires in %s (%s)", w.What, humanDuration(w.Left), w.NotAfter.UTC().Format(time.RFC3339))
}

func humanDuration(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
	}
	return d.Round(time.Minute).String()
}

// Check returns a warning for every certificate expiring within threshold of now.
func Check(now time.Time, threshold time.Duration, certs map[string]*x509.Certificate) []Warning {
	var out []Warning
	for what, c := range certs {
		if left := c.NotAfter.Sub(now); left < threshold {
			out = append(out, Warning{What: what, NotAfter: c.NotAfter, Left: left})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Left < out[j].Left })
	return out
}

// CheckFiles is Check over certificate files; an unreadable file is a warning too.
func CheckFiles(now time.Time, threshold time.Duration, files ...CertFile) []Warning {
	certs := map[string]*x509.Certificate{}
	var out []Warning
	for _, f := range files {
		if f.Path == "" {
			continue
		}
		c, err := ReadLeaf(f.Path)
		if err != nil {
			out = append(out, Warning{What: fmt.Sprintf("%s certificate %s unreadable: %v", f.Name, f.Path, err)})
			continue
		}
		certs[fmt.Sprintf("%s certificate %s", f.Name, f.Path)] = c
	}
	return append(out, Check(now, threshold, certs)...)
}

// CheckBundles reads every bundles/<td> record and warns for each root expiring within
// threshold (and for records that do not validate). `meshfed status` calls it with
// WarnBefore.
func CheckBundles(ctx context.Context, st *store.Store, now time.Time, threshold time.Duration) ([]Warning, error) {
	items, _, bad, err := store.List[records.Bundle](ctx, st, st.KS.Family(records.KindBundle))
	if err != nil {
		return nil, err
	}
	var out []Warning
	for _, e := range bad {
		out = append(out, Warning{What: fmt.Sprintf("unreadable bundle record: %v", e)})
	}
	certs := map[string]*x509.Certificate{}
	for _, it := range items {
		// Parse without the validity check of FromRecord so that an expired root is
		// reported as expired rather than as an invalid record.
		b, err := trust.Parse(it.Value.TrustDomain, it.Value.JWKS, trust.ParseOptions{Now: now, AllowEmpty: true, DropExpired: true})
		if err != nil {
			out = append(out, Warning{What: fmt.Sprintf("bundle of %s does not validate: %v", it.Value.TrustDomain, err)})
			continue
		}
		for _, d := range b.Dropped {
			if strings.Contains(d, "expired") {
				out = append(out, Warning{What: fmt.Sprintf("bundle of %s holds an expired root: %s", it.Value.TrustDomain, d)})
			}
		}
		for _, r := range b.X509Roots {
			fp := trust.Fingerprint(r)
			certs[fmt.Sprintf("root of %s (%s…)", it.Value.TrustDomain, fp[:19])] = r
		}
	}
	return append(out, Check(now, threshold, certs)...), nil
}
