package hbonetest

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/net/http2"
)

// Ztunnel is a destination "ztunnel": it accepts mTLS (its certificate is the destination
// workload's SVID; callers must present an SVID of Bundles), ALPN h2, and forwards each
// CONNECT stream to Forward(authority) over plain TCP.
type Ztunnel struct {
	Addr string
	// Accepted counts TCP connections accepted; Authorities the CONNECT authorities seen.
	Accepted atomic.Int64

	mu          sync.Mutex
	authorities []string
	ln          net.Listener
	wg          sync.WaitGroup
}

// StartZtunnel listens on listen (HOST:PORT; port 0 picks one). forward maps a CONNECT
// authority to the app's HOST:PORT. Close stops it.
func StartZtunnel(listen string, cert *tls.Certificate, bundles x509bundle.Source, forward func(authority string) string) (*Ztunnel, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	z := &Ztunnel{Addr: ln.Addr().String(), ln: ln}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{"h2"},
		Certificates: []tls.Certificate{*cert},
		ClientAuth:   tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, _, err := x509svid.ParseAndVerify(raw, bundles)
			return err
		},
	}
	h2 := &http2.Server{}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		z.mu.Lock()
		z.authorities = append(z.authorities, r.Host)
		z.mu.Unlock()
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		app, err := net.Dial("tcp", forward(r.Host))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer app.Close()
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		_ = rc.Flush()
		go func() {
			if _, err := io.Copy(app, r.Body); err == nil {
				_ = app.(*net.TCPConn).CloseWrite()
			}
		}()
		buf := make([]byte, 32<<10)
		for {
			n, err := app.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
				_ = rc.Flush()
			}
			if err != nil {
				return
			}
		}
	})
	z.wg.Add(1)
	go func() {
		defer z.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			z.Accepted.Add(1)
			z.wg.Add(1)
			go func() {
				defer z.wg.Done()
				tc := tls.Server(c, cfg)
				if err := tc.Handshake(); err != nil {
					c.Close()
					return
				}
				h2.ServeConn(tc, &http2.ServeConnOpts{Handler: handler})
			}()
		}
	}()
	return z, nil
}

// Authorities lists the CONNECT authorities received so far.
func (z *Ztunnel) Authorities() []string {
	z.mu.Lock()
	defer z.mu.Unlock()
	return append([]string(nil), z.authorities...)
}

// Close stops accepting (live streams end with their peers).
func (z *Ztunnel) Close() error { return z.ln.Close() }
