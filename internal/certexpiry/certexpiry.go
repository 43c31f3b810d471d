package certexpiry

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

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
