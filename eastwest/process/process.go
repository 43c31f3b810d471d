package process

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/eastwest"
	"github.com/meshfed/meshfed/eastwest/xdsroutes"
	"github.com/meshfed/meshfed/internal/admin"
	"github.com/meshfed/meshfed/internal/certexpiry"
)

// Config is one gateway process: the gateway, where it listens, its admin endpoints and
// its one route source (Exports or Federation).
type Config struct {
	// Gateway configures the data plane. Its Registry is replaced by the process's own
	// (Registry), which the admin endpoints serve; Log defaults to slog.Default().
	Gateway eastwest.Config
	// HealthCertFile and HealthKeyFile, when set, are the PEM certificate and key that
	// answer health.meshfed.internal; else Gateway.HealthCert, else a self-signed one.
	HealthCertFile, HealthKeyFile string
	// Listen is HOST:PORT the gateway accepts TLS on (port 0 picks a free one), through
	// eastwest.Listen.
	Listen string
	// Admin, when set, is HOST:PORT of /metrics, /healthz and /readyz, served from before
	// the first route table until the gateway has stopped; empty: not served.
	Admin string

	// Exports is an exports file (YAML or JSON) to route, polled every ExportsPoll
	// (default 1s).
	Exports     string
	ExportsPoll time.Duration
	// Federation takes the routes from this cluster's federation service over xDS. Its
	// Cluster, Domain and Log default to the gateway's; its metrics go to Registry.
	Federation *xdsroutes.Config
	// FederationTLS, when set, secures the xDS connection from files (it replaces
	// Federation.TLS); the expiry of its client certificate is exported.
	FederationTLS *xdsroutes.TLSFiles

	// HBONE, when set, also serves HBONE (Istio ambient) on HBONE.Listen, from the same
	// route table; off by default.
	HBONE *HBONE
}

// Part names the piece of a Config an error is about, so that a command can name the
// flag behind it.
type Part string

// The parts of a Config that Start reports errors about.
const (
	PartHealthCert    Part = "health certificate"
	PartFederationTLS Part = "federation TLS"
	PartFederation    Part = "federation"
	PartExports       Part = "exports"
	PartAdmin         Part = "admin"
	PartListen        Part = "listen"
)

// Error is a Start failure attributed to one part of the Config.
type Error struct {
	Part Part
	Err  error
}

func (e *Error) Error() string { return string(e.Part) + ": " + e.Err.Error() }

func (e *Error) Unwrap() error { return e.Err }

// Process is a running gateway process.
type Process struct {
	gw      *eastwest.Gateway
	adm     *admin.Server
	ln      net.Listener
	hln     net.Listener // HBONE; nil without Config.HBONE
	closeH  func()       // releases the HBONE identity sources
	log     *slog.Logger
	stopSrc context.CancelFunc
	stopAdm func()
	done    chan struct{}
	err     error

	closeOnce sync.Once
}

// Start makes the gateway, serves the admin endpoints (when Admin is set), runs the route
// source and waits for its first table, then listens and serves. It returns once the
// gateway accepts connections. When ctx ends the gateway drains (as on SIGTERM); a ctx
// that ends before the first table stops the start, and Start returns ctx.Err(). The
// route source outlives ctx: it keeps the table fresh during the drain.
func Start(ctx context.Context, cfg Config) (*Process, error) {
	if cfg.Gateway.Log == nil {
		cfg.Gateway.Log = slog.Default()
	}
	log := cfg.Gateway.Log
	if cfg.Federation != nil && cfg.Exports != "" {
		return nil, &Error{PartFederation, errors.New("one route source: an exports file or the federation, not both")}
	}
	if cfg.Federation == nil && cfg.Exports == "" {
		return nil, &Error{PartExports, errors.New("no route source: name an exports file or the federation")}
	}
	if cfg.HealthCertFile != "" || cfg.HealthKeyFile != "" {
		c, err := tls.LoadX509KeyPair(cfg.HealthCertFile, cfg.HealthKeyFile)
		if err != nil {
			return nil, &Error{PartHealthCert, err}
		}
		cfg.Gateway.HealthCert = &c
	} else if cfg.Gateway.HealthCert == nil {
		c, err := eastwest.SelfSignedHealthCert()
		if err != nil {
			return nil, err
		}
		cfg.Gateway.HealthCert = &c
	}
	adm := admin.New(log)
	cfg.Gateway.Registry = adm.Registry
	// Seconds left on the certificates this process presents (a root or a health
	// certificate must never expire unnoticed).
	leaf, err := certexpiry.LeafOf(cfg.Gateway.HealthCert)
	if err != nil {
		return nil, &Error{PartHealthCert, err}
	}
	var certFiles []certexpiry.CertFile
	if cfg.FederationTLS != nil && cfg.FederationTLS.Cert != "" {
		certFiles = append(certFiles, certexpiry.CertFile{Name: "gateway-xds-client", Path: cfg.FederationTLS.Cert})
	}
	closeH := func() {}
	if cfg.HBONE != nil {
		hs, err := cfg.HBONE.setup(ctx, log.Error)
		if err != nil {
			return nil, err
		}
		cfg.Gateway.HBONE, closeH = hs.cfg, hs.close
		certFiles = append(certFiles, hs.certs...)
	}
	adm.Registry.MustRegister(certexpiry.NewCertCollector(func() map[string]*x509.Certificate {
		return map[string]*x509.Certificate{"gateway-health": leaf}
	}, certFiles...))
	g, err := eastwest.New(cfg.Gateway)
	if err != nil {
		closeH()
		return nil, err
	}
	adm.AddReadiness("routes", g.Ready)
	adm.AddLiveness("gateway", func() error { return nil })

	src, srcPart, err := cfg.source(g, adm.Registry)
	if err != nil {
		closeH()
		return nil, err
	}
	p := &Process{gw: g, adm: adm, log: log, stopAdm: func() {}, closeH: closeH, done: make(chan struct{})}
	// The admin endpoints come up before the first table: waiting for the federation can
	// take a while, and meanwhile /healthz answers, /readyz says why not and /metrics shows
	// the xDS link.
	if cfg.Admin != "" {
		if err := adm.Listen(cfg.Admin); err != nil {
			return nil, &Error{PartAdmin, err}
		}
		admCtx, stopAdm := context.WithCancel(context.Background())
		admDone := make(chan error, 1)
		go func() { admDone <- adm.Serve(admCtx) }()
		p.stopAdm = func() { stopAdm(); <-admDone }
	}

	// The source outlives ctx (it feeds the table during the drain); only a stop before
	// the first table ends it early.
	srcCtx, stopSrc := context.WithCancel(context.Background())
	p.stopSrc = stopSrc
	started := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			stopSrc()
		case <-started:
		}
	}()
	err = g.StartSource(srcCtx, src)
	close(started)
	if err != nil {
		p.stop()
		if ctx.Err() != nil {
			log.Info("stopped before the first route table")
			return nil, ctx.Err()
		}
		return nil, &Error{srcPart, err}
	}
	ln, err := g.Listen(ctx, cfg.Listen)
	if err != nil {
		p.stop()
		return nil, &Error{PartListen, err}
	}
	p.ln = ln
	if cfg.HBONE != nil {
		hln, err := g.Listen(ctx, cfg.HBONE.Listen)
		if err != nil {
			ln.Close()
			p.stop()
			return nil, &Error{PartHBONEListen, err}
		}
		p.hln = hln
	}
	go func() {
		var hboneErr error
		hdone := make(chan struct{})
		if p.hln != nil {
			go func() { hboneErr = g.ServeHBONE(ctx, p.hln); close(hdone) }()
		} else {
			close(hdone)
		}
		p.err = g.Serve(ctx, ln)
		<-hdone // the gateway drains as one: ServeHBONE ends with Serve
		if p.err == nil {
			p.err = hboneErr
		}
		close(p.done)
	}()
	return p, nil
}

// source makes the route source the Config names.
func (cfg *Config) source(g *eastwest.Gateway, reg prometheus.Registerer) (eastwest.RouteSource, Part, error) {
	if cfg.Federation == nil {
		return &eastwest.FileSource{Path: cfg.Exports, Interval: cfg.ExportsPoll, Log: cfg.Gateway.Log, OnReload: g.ObserveReload}, PartExports, nil
	}
	xc := *cfg.Federation
	if xc.Cluster == "" {
		xc.Cluster = cfg.Gateway.Cluster
	}
	if xc.Domain == "" {
		xc.Domain = cfg.Gateway.Domain
	}
	if xc.Log == nil {
		xc.Log = cfg.Gateway.Log
	}
	xc.Registry = reg
	if cfg.FederationTLS != nil {
		host, _, _ := net.SplitHostPort(xc.Address)
		t, err := cfg.FederationTLS.Config(host)
		if err != nil {
			return nil, PartFederationTLS, &Error{PartFederationTLS, err}
		}
		xc.TLS = t
	}
	xs, err := xdsroutes.New(xc)
	if err != nil {
		return nil, PartFederation, &Error{PartFederation, err}
	}
	return xs, PartFederation, nil
}

func (p *Process) stop() {
	p.stopSrc()
	p.stopAdm()
	p.closeH()
}

// Gateway is the data plane this process runs.
func (p *Process) Gateway() *eastwest.Gateway { return p.gw }

// Addr is the gateway's bound HOST:PORT.
func (p *Process) Addr() string { return p.ln.Addr().String() }

// HBONEAddr is the HBONE listener's bound HOST:PORT (empty without Config.HBONE).
func (p *Process) HBONEAddr() string {
	if p.hln == nil {
		return ""
	}
	return p.hln.Addr().String()
}

// AdminAddr is the admin endpoints' bound HOST:PORT (empty when not served).
func (p *Process) AdminAddr() string { return p.adm.Addr() }

// Registry holds the process's metrics (served on /metrics when Admin is set).
func (p *Process) Registry() *prometheus.Registry { return p.adm.Registry }

// Drain begins the graceful stop at once (what the end of Start's ctx does): the health
// name fails, and the gateway stops accepting and lets live connections finish.
func (p *Process) Drain() { p.gw.Drain() }

// Done is closed once the gateway has stopped serving (its drain is over).
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits until the gateway has stopped serving (the end of Start's ctx or Drain
// begins that) and returns what stopped it: nil after a drain, else the accept error. The
// admin endpoints still answer until Close.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// Close drains the gateway if that has not begun, waits for it to stop, then stops the
// route source and the admin endpoints. It returns what Wait returns.
func (p *Process) Close() error {
	p.Drain()
	err := p.Wait()
	p.closeOnce.Do(func() {
		p.stop()
		p.log.Info("gateway stopped")
	})
	return err
}
