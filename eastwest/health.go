package eastwest

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"time"

	"github.com/meshfed/meshfed/api/healthwire"
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
	clientConn
	pre []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.clientConn.Read(p)
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

// healthStreamIdle closes a health stream whose checker sent no ping for this long (a
// checker pings several times a second).
const healthStreamIdle = 10 * time.Second

// healthTLS is the health name's TLS configuration: the gateway's health certificate, and
// the stream mode's ALPN protocol (api/healthwire) for checkers that offer it. (A clone
// per health connection: a stream lives long, and one-shot checks are a few a second.)
func (g *Gateway) healthTLS() *tls.Config {
	cfg := g.health.Clone()
	cfg.NextProtos = []string{healthwire.StreamALPN}
	return cfg
}

// serveHealth terminates TLS with the gateway's own certificate and writes one status
// line, or, for a checker that chose the stream mode, one line per ping until it goes
// away. raw (the hello already read) is only valid until return.
func (g *Gateway) serveHealth(c clientConn, raw []byte) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(g.cfg.HelloTimeout))
	tc := tls.Server(&replayConn{clientConn: c, pre: raw}, g.healthTLS())
	if err := tc.Handshake(); err != nil {
		g.m.rejected.WithLabelValues(ProtocolSNI, ReasonHealthHandshake).Inc()
		g.log.Debug("health handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		return
	}
	if tc.ConnectionState().NegotiatedProtocol == healthwire.StreamALPN {
		g.serveHealthStream(c, tc)
		return
	}
	g.writeHealthLine(tc)
	_ = tc.CloseWrite() // close_notify: the line is complete
}

// writeHealthLine writes the status line and counts it; it reports the status word.
func (g *Gateway) writeHealthLine(tc *tls.Conn) (string, error) {
	line := g.HealthLine()
	status := line[:indexByte(line, ' ')]
	g.m.health.WithLabelValues(status).Inc()
	_, err := tc.Write([]byte(line))
	return status, err
}

// serveHealthStream answers each ping with a status line. Once the gateway drains, the
// next answer says "draining" and the stream ends; a stream without a ping for
// healthStreamIdle ends too, and so does every stream shortly after a drain begins (so
// that the drain never waits on an idle checker).
func (g *Gateway) serveHealthStream(c clientConn, tc *tls.Conn) {
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-g.drainCh:
			_ = c.SetReadDeadline(time.Now().Add(time.Second)) // time for one more ping
		case <-done:
		}
	}()
	br := bufio.NewReaderSize(tc, healthwire.MaxPing)
	for {
		if !g.draining.Load() {
			_ = c.SetReadDeadline(time.Now().Add(healthStreamIdle))
		}
		if err := healthwire.ReadPing(br); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrDeadlineExceeded) {
				g.log.Debug("health stream ended", "remote", c.RemoteAddr().String(), "err", err)
			}
			return
		}
		if g.faultOnHealthPing(c) {
			return
		}
		_ = c.SetWriteDeadline(time.Now().Add(g.cfg.HelloTimeout))
		status, err := g.writeHealthLine(tc)
		if err != nil || status == "draining" {
			_ = tc.CloseWrite()
			return
		}
	}
}

func indexByte(s string, b byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == b {
			return i
		}
	}
	return len(s)
}
