package eastwest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"time"

	"github.com/meshfed/meshfed/api/names"
)

// SelfSignedHealthCert makes the default certificate of the health name: ECDSA P-256,
// self-signed, valid one year, for health.meshfed.internal.
func SelfSignedHealthCert() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("health cert key: %w", err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names.HealthSNI, Organization: []string{"meshfed gateway"}},
		DNSNames:              []string{names.HealthSNI},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("health cert: %w", err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// replayConn gives crypto/tls the hello bytes already read, then the connection.
type replayConn struct {
	*net.TCPConn
	pre []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.TCPConn.Read(p)
}

// HealthLine is the status line the health name answers: "ok ..." when the gateway
// routes, "draining ..." once it drains, "not-ready ..." before it has a route table.
func (g *Gateway) HealthLine() string {
	t := g.tbl.Load()
	routes, ready := 0, 0
	if t != nil {
		routes, ready = t.routes, t.ready
	}
	status := "ok"
	switch {
	case g.draining.Load():
		status = "draining"
	case t == nil:
		status = "not-ready"
	}
	return fmt.Sprintf("%s cluster=%s service_ports=%d ready_endpoints=%d open_connections=%d\n",
		status, g.cfg.Cluster, routes, ready, g.open.Load())
}

// serveHealth terminates TLS with the gateway's own certificate and writes one status line.
// raw (the hello already read) is only valid until return.
func (g *Gateway) serveHealth(c *net.TCPConn, raw []byte) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(g.cfg.HelloTimeout))
	tc := tls.Server(&replayConn{TCPConn: c, pre: raw}, g.health)
	if err := tc.Handshake(); err != nil {
		g.m.rejected.WithLabelValues(ReasonHealthHandshake).Inc()
		g.log.Debug("health handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		return
	}
	line := g.HealthLine()
	status := line[:indexByte(line, ' ')]
	g.m.health.WithLabelValues(status).Inc()
	_, _ = tc.Write([]byte(line))
	_ = tc.CloseWrite() // close_notify: the line is complete
}

func indexByte(s string, b byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == b {
			return i
		}
	}
	return len(s)
}
