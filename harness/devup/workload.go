package devup

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/meshfed/meshfed/trust/devca"
)

// workload is a demo gRPC server (the standard health service) with mTLS: its certificate
// is an SVID of its cluster's trust domain, and it accepts clients whose certificates
// chain to any root its own federation service wrote out (the federated bundles), so a
// client from another trust domain is trusted only through trust federation.
type workload struct {
	addr string
	srv  *grpc.Server
}

func startWorkload(addr string, ca *devca.CA, id, bundleDir string) (*workload, error) {
	svid, err := ca.Issue(devca.IssueRequest{ID: id})
	if err != nil {
		return nil, err
	}
	return StartWorkload(addr, svid.TLSCertificate(), bundleDir)
}

// Workload is the demo gRPC server: the standard health service, mTLS with the given
// certificate (an SVID), clients verified against the federated roots in a bundle directory.
type Workload = workload

// Addr is the address the workload serves on.
func (w *workload) Addr() string { return w.addr }

// Stop stops the workload at once.
func (w *workload) Stop() { w.stop() }

// StartWorkload serves the demo gRPC service on addr (`meshfed dev workload` runs it as a
// process): cert is its SVID, and clients must present a certificate chaining to one of
// the roots (<td>.pem) its federation service writes into bundleDir.
func StartWorkload(addr string, cert *tls.Certificate, bundleDir string) (*Workload, error) {
	roots := &bundleRoots{dir: bundleDir}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			pool, err := roots.pool()
			if err != nil {
				return nil, err
			}
			return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*cert},
				ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}, nil
		},
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("workload listen %s: %w", addr, err)
	}
	// Every answer names the workload that gave it (the address it listens on): through a
	// gateway, the client's TCP peer is the gateway, not the workload.
	self := ln.Addr().String()
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			_ = grpc.SetHeader(ctx, metadata.Pairs(WorkloadAddrHeader, self))
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(ln) }()
	return &workload{addr: self, srv: srv}, nil
}

// WorkloadAddrHeader is the response header in which a demo workload names its own address.
const WorkloadAddrHeader = "meshfed-workload-addr"

func (w *workload) stop() { w.srv.Stop() }

// bundleRoots reads the federated roots (<td>.pem files) from a bundle directory, at most
// once a second: the trust component rewrites them atomically when bundles change.
type bundleRoots struct {
	dir  string
	mu   sync.Mutex
	at   time.Time
	last *x509.CertPool
}

func (b *bundleRoots) pool() (*x509.CertPool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last != nil && time.Since(b.at) < time.Second {
		return b.last, nil
	}
	files, err := filepath.Glob(filepath.Join(b.dir, "*.pem"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	n := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for {
			var blk *pem.Block
			blk, data = pem.Decode(data)
			if blk == nil {
				break
			}
			if c, err := x509.ParseCertificate(blk.Bytes); err == nil && !strings.Contains(blk.Type, "KEY") {
				pool.AddCert(c)
				n++
			}
		}
	}
	if n == 0 {
		return nil, fmt.Errorf("no federated roots in %s yet", b.dir)
	}
	b.last, b.at = pool, time.Now()
	return pool, nil
}
