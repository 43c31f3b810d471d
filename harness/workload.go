package harness

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"sync"
	"time"
)

// Workload is a demo TLS server: for every line it reads it answers
// "<cluster> <workload>: <line>", so a caller sees which cluster served it.
type Workload struct {
	Cluster string
	Name    string
	Addr    string
	Cert    tls.Certificate
	ln      net.Listener
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
}

// NewSelfSignedCert makes an ECDSA certificate for dnsNames, self-signed, valid 24h. Tests
// that need a CA use the trust package's development CA instead.
func NewSelfSignedCert(dnsNames ...string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: dnsNames[0]}, DNSNames: dnsNames,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// StartWorkload serves TLS on addr (HOST:PORT, port 0 for a free one) with cert, or with
// a fresh self-signed certificate when cert is nil.
func StartWorkload(cluster, name, addr string, cfg *tls.Config) (*Workload, error) {
	if cfg == nil {
		cert, err := NewSelfSignedCert(name + "." + cluster + ".workload")
		if err != nil {
			return nil, err
		}
		cfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := tls.Listen("tcp", addr, cfg)
	if err != nil {
		return nil, fmt.Errorf("workload %s/%s listen %s: %w", cluster, name, addr, err)
	}
	w := &Workload{Cluster: cluster, Name: name, Addr: ln.Addr().String(), ln: ln, conns: map[net.Conn]struct{}{}}
	if len(cfg.Certificates) > 0 {
		w.Cert = cfg.Certificates[0]
	}
	w.wg.Add(1)
	go w.serve()
	return w, nil
}

func (w *Workload) serve() {
	defer w.wg.Done()
	for {
		c, err := w.ln.Accept()
		if err != nil {
			return
		}
		w.mu.Lock()
		w.conns[c] = struct{}{}
		w.mu.Unlock()
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			defer func() {
				w.mu.Lock()
				delete(w.conns, c)
				w.mu.Unlock()
				c.Close()
			}()
			_ = c.SetDeadline(time.Now().Add(time.Minute))
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if _, err := fmt.Fprintf(c, "%s %s: %s", w.Cluster, w.Name, line); err != nil {
					return
				}
			}
		}()
	}
}

// Close stops the workload and its connections.
func (w *Workload) Close() {
	w.ln.Close()
	w.mu.Lock()
	for c := range w.conns {
		c.Close()
	}
	w.mu.Unlock()
	w.wg.Wait()
}
