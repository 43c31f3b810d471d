package expiry

import (
	"context"
	"crypto/x509"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/internal/certexpiry"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
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
func CheckFiles(now time.Time, threshold time.Duration, files ...certexpiry.CertFile) []Warning {
	certs := map[string]*x509.Certificate{}
	var out []Warning
	for _, f := range files {
		if f.Path == "" {
			continue
		}
		c, err := certexpiry.ReadLeaf(f.Path)
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
