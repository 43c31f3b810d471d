package trusttest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/internal/testetcd"
	"github.com/meshfed/meshfed/keyspace/embedetcd"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/devca"
	"github.com/meshfed/meshfed/trust/federate"
	"github.com/meshfed/meshfed/trust/source"
)

// Env is one etcd shared by simulated clusters.
type Env struct {
	T    testing.TB
	Etcd *embedetcd.Server
	Cli  *clientv3.Client
	St   *store.Store
}

// NewEnv starts etcd.
func NewEnv(t testing.TB) *Env {
	e := testetcd.Start(t)
	cli := testetcd.Client(t, e)
	st, err := store.New(cli, records.DefaultPrefix, Quiet())
	if err != nil {
		t.Fatal(err)
	}
	return &Env{T: t, Etcd: e, Cli: cli, St: st}
}

// Quiet is a logger that drops everything below error.
func Quiet() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Cluster is one simulated cluster's trust component.
type Cluster struct {
	Name, TD  string
	DevDir    string
	BundleDir string
	Svc       *federate.Service
	cancel    context.CancelFunc
	done      chan struct{}
}

// ClusterOptions tune StartCluster.
type ClusterOptions struct {
	// Source overrides the dev CA source.
	Source source.Source
	// SVIDTTL of the dev CA (default 1 h).
	SVIDTTL  time.Duration
	Endpoint bool
	// EndpointCert/Key serve the bundle endpoint with these files instead of a dev SVID.
	EndpointCert, EndpointKey string
	// NoHeartbeat leaves alive/<name> out (an unreachable member).
	NoHeartbeat bool
	// NoService registers the member without running anything.
	NoService bool
	// ShareTrustDomainWith records the member as sharing the trust domain of that owner.
	ShareTrustDomainWith string
	// DevCADir uses this existing dev CA directory (e.g. the owner's, for one shared root)
	// instead of a new CA.
	DevCADir string
}

// StartCluster registers clusters/<name>, holds alive/<name> and runs the trust service
// with a dev CA source in a temp dir.
func (e *Env) StartCluster(name, td string, o ClusterOptions) *Cluster {
	t := e.T
	t.Helper()
	dir := t.TempDir()
	c := &Cluster{Name: name, TD: td, DevDir: filepath.Join(dir, "ca"), BundleDir: filepath.Join(dir, "bundles"), done: make(chan struct{})}
	ctx := context.Background()
	rec := &records.Cluster{Name: name, Network: "n", Region: "r", Zone: "z", TrustDomain: td, Gateways: []string{"127.0.0.1:15443"},
		SharesTrustDomainWith: o.ShareTrustDomainWith, JoinedAt: time.Now()}
	if _, err := e.St.Create(ctx, e.St.KS.Cluster(name), rec); err != nil && !errors.Is(err, store.ErrExists) {
		t.Fatal(err)
	}
	if o.NoService {
		close(c.done)
		return c
	}
	if o.DevCADir != "" {
		c.DevDir = o.DevCADir
	} else if _, err := devca.Init(c.DevDir, td, devca.Options{SVIDTTL: o.SVIDTTL}); err != nil {
		t.Fatal(err)
	}
	src := o.Source
	if src == nil {
		src = source.NewDev(td, c.DevDir, source.Options{Log: Quiet(), Poll: 20 * time.Millisecond})
	}
	cfg := federate.Config{Cluster: name, TrustDomain: td, Source: src, BundleDir: c.BundleDir, Store: e.St, Log: Quiet(), RetryInterval: 50 * time.Millisecond}
	if o.Endpoint {
		cfg.Endpoint = &federate.EndpointConfig{Addr: "127.0.0.1:0", DevCADir: c.DevDir}
		if o.EndpointCert != "" {
			cfg.Endpoint = &federate.EndpointConfig{Addr: "127.0.0.1:0", CertFile: o.EndpointCert, KeyFile: o.EndpointKey}
		}
	}
	svc, err := federate.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Svc = svc
	rctx, cancel := context.WithCancel(ctx)
	c.cancel = cancel
	var hb *store.Heartbeat
	if !o.NoHeartbeat {
		hb = e.St.NewHeartbeat(name, name+"-test", 2*time.Second)
	}
	go func() {
		defer close(c.done)
		if hb != nil {
			go hb.Run(rctx)
		}
		_ = svc.Run(rctx)
	}()
	t.Cleanup(c.Stop)
	return c
}

// Stop ends the cluster's service (its heartbeat lease then expires by itself).
func (c *Cluster) Stop() {
	if c.cancel != nil {
		c.cancel()
	}
	<-c.done
}

// CA opens the cluster's dev CA.
func (c *Cluster) CA(t testing.TB) *devca.CA {
	ca, err := devca.Open(c.DevDir, c.TD)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// Bundles is an x509bundle.Source over the cluster's current federated set.
func (c *Cluster) Bundles() x509bundle.Source { return setSource{c.Svc} }

type setSource struct{ s *federate.Service }

func (s setSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	set := s.s.Set()
	if set == nil {
		return nil, errors.New("no bundles yet")
	}
	return set.GetX509BundleForTrustDomain(td)
}

// Has reports whether the cluster's set has td at sequence seq or later.
func (c *Cluster) Has(td string, seq uint64) bool {
	b, ok := c.Svc.Set().Get(td)
	return ok && b.Sequence >= seq
}

// Workload holds an SVID of a dev CA, re-issued at half-life and on issuer switch.
type Workload struct {
	ID   spiffeid.ID
	svid atomic.Pointer[x509svid.SVID]
}

// StartWorkload keeps an SVID for id from ca until the test ends.
func StartWorkload(t testing.TB, ca *devca.CA, id string) *Workload {
	w := &Workload{ID: spiffeid.RequireFromString(id)}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	var once sync.Once
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ca.Keep(ctx, devca.IssueRequest{ID: id}, 5*time.Millisecond, func(s *devca.SVID) error {
			w.svid.Store(&x509svid.SVID{ID: s.ID, Certificates: s.Chain, PrivateKey: s.Key})
			once.Do(func() { close(ready) })
			return nil
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("no SVID issued")
	}
	return w
}

// GetX509SVID implements x509svid.Source.
func (w *Workload) GetX509SVID() (*x509svid.SVID, error) { return w.svid.Load(), nil }

// Leaf is the current SVID's leaf.
func (w *Workload) Leaf() *x509.Certificate { return w.svid.Load().Certificates[0] }

// Server is an mTLS echo server of a workload, verifying clients through bundles.
type Server struct {
	Addr string
	ln   net.Listener
	wg   sync.WaitGroup
}

// Serve runs an mTLS server for w that accepts clients of trust domain peerTD verified
// through bundles.
func Serve(t testing.TB, w *Workload, bundles x509bundle.Source, peerTD string) *Server {
	tc := tlsconfig.MTLSServerConfig(w, bundles, tlsconfig.AuthorizeMemberOf(spiffeid.RequireTrustDomainFromString(peerTD)))
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tc)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: ln.Addr().String(), ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				b := make([]byte, 1)
				if _, err := io.ReadFull(c, b); err == nil {
					_, _ = c.Write(b)
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

// Call does one full mTLS handshake and a one-byte echo from w to a server of serverTD.
func Call(w *Workload, bundles x509bundle.Source, addr, serverTD string) error {
	tc := tlsconfig.MTLSClientConfig(w, bundles, tlsconfig.AuthorizeMemberOf(spiffeid.RequireTrustDomainFromString(serverTD)))
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: tc}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte{7}); err != nil {
		return err
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		return fmt.Errorf("echo (the server refused us after the handshake?): %w", err)
	}
	return nil
}

// SetOf is c's current set (never nil: empty before the first sync).
func SetOf(c *Cluster) *trust.Set {
	if s := c.Svc.Set(); s != nil {
		return s
	}
	return trust.NewSet()
}
