package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/discovery"
	"github.com/meshfed/meshfed/federation/health"
	"github.com/meshfed/meshfed/federation/istio"
	"github.com/meshfed/meshfed/federation/service"
	"github.com/meshfed/meshfed/federation/xds"
	"github.com/meshfed/meshfed/internal/admin"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/keyspace/view"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/federate"
)

// Config of one federation process.
type Config struct {
	Cluster string
	Store   *store.Store
	// Source of local exports (nil: the cluster only imports).
	Source       discovery.Source
	HeartbeatTTL time.Duration
	StaleGrace   time.Duration
	// XDS configures the xDS server (Listen empty: 127.0.0.1:15010).
	XDS xds.Options
	// Health configures the gateway health checker.
	Health health.Options
	// IstioMCP, when its Listen is set, serves the same plans to istiod as an MCP config
	// source (federation/istio); off by default.
	IstioMCP istio.Options
	// IstioBuild tunes the resources given to istiod.
	IstioBuild istio.BuildOptions
	// Instance names this process among the cluster's federation replicas (a DNS label;
	// default host-pid): the gateway health it sees is published under
	// acks/<cluster>/health/<instance>, the MCP server's status under
	// acks/<cluster>/istio/<instance>.
	Instance string
	// Trust, when set, is the trust component to run beside the service; the agent
	// connects its outputs to the xDS server (SDS) and the health checker (authenticated
	// gateway checks). Build it with federate.New.
	Trust *federate.Service
	// Elector, when set, runs the writing half of the service (source, publisher,
	// heartbeat) only on the elected replica; see service.Config.Elector.
	Elector service.Elector
	// Admin, when set, gets the readiness checks and debug handlers; its registry is
	// used for metrics when Registry is nil.
	Admin    *admin.Server
	Log      *slog.Logger
	Registry prometheus.Registerer
}

// Agent is a federation process.
type Agent struct {
	cfg     Config
	Service *service.Service
	XDS     *xds.Server
	Health  *health.Checker
	Trust   *federate.Service
	// Istio is the MCP server for istiod (nil unless Config.IstioMCP.Listen is set).
	Istio       *istio.Server
	istioSource *istio.Source
	instance    string
	log         *slog.Logger

	mu        sync.Mutex
	clusterTD map[string]string
	set       *trust.Set
}

// New builds the parts and binds the xDS listener (so XDS.Addr is known before Run).
func New(cfg Config) (*Agent, error) {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	reg := cfg.Registry
	if reg == nil && cfg.Admin != nil {
		reg = cfg.Admin.Registry
	}
	var src service.Source // nil: the cluster only imports
	if cfg.Source != nil {
		src = discovery.ExportsOnly{Source: cfg.Source}
	}
	svc, err := service.New(service.Config{Cluster: cfg.Cluster, Store: cfg.Store, Source: src,
		HeartbeatTTL: cfg.HeartbeatTTL, StaleGrace: cfg.StaleGrace, Elector: cfg.Elector, Log: log, Registry: reg})
	if err != nil {
		return nil, err
	}
	clog := log.With("cluster", cfg.Cluster)
	hc, err := health.New(cfg.Health, clog, reg)
	if err != nil {
		return nil, fmt.Errorf("health checker: %w", err)
	}
	feed := xds.NewFeed()
	svc.OnView(feed.Send)
	xo := cfg.XDS
	if xo.StaleGrace == 0 {
		xo.StaleGrace = cfg.StaleGrace
	}
	var is *istio.Server
	var isrc *istio.Source
	if cfg.IstioMCP.Listen != "" {
		// One plan, two outputs: istiod gets exactly the plans xDS serves.
		if is, err = istio.NewServer(clog, reg, cfg.IstioMCP); err != nil {
			return nil, fmt.Errorf("istio mcp: %w", err)
		}
		if err := is.Listen(); err != nil {
			return nil, err
		}
		isrc = istio.NewSource(is, cfg.IstioBuild, clog)
		next := xo.OnPlans
		xo.OnPlans = func(u xds.PlanUpdate) {
			isrc.Update(istioServices(u, cfg.Cluster))
			if next != nil {
				next(u)
			}
		}
	}
	xs, err := xds.New(cfg.Cluster, feed.C(), hc, clog, reg, xo)
	if err != nil {
		return nil, fmt.Errorf("xds: %w", err)
	}
	if err := xs.Listen(); err != nil {
		return nil, fmt.Errorf("xds: %w", err)
	}
	a := &Agent{cfg: cfg, Service: svc, XDS: xs, Health: hc, Trust: cfg.Trust, Istio: is, istioSource: isrc, instance: cfg.Instance, log: clog}
	if a.instance == "" {
		a.instance = instanceLabel()
	} else if err := validate.DNSLabel(a.instance); err != nil {
		return nil, fmt.Errorf("agent instance: %w", err)
	}
	if a.Trust != nil {
		a.wireTrust()
		if is != nil {
			a.Trust.AckForIstiod()
		}
	}
	if adm := cfg.Admin; adm != nil {
		adm.AddReadiness("federation", svc.Ready)
		adm.AddReadiness("xds", xs.Ready)
		adm.Handle("/debug/imports", svc.ImportsHandler())
		adm.Handle("/debug/xds", xs.DebugHandler())
		if a.Trust != nil {
			adm.AddReadiness("trust", a.Trust.Ready)
		}
		if is != nil {
			adm.AddReadiness("istio-mcp", is.Ready)
			adm.Handle("/debug/istio", is.DebugHandler())
		}
	}
	return a, nil
}

// istioServices is one planning pass as the Istio config source takes it: each service's
// plan, ports and the remote workloads' identities (the ServiceEntry's subjectAltNames).
func istioServices(u xds.PlanUpdate, self string) map[string]*istio.Service {
	out := make(map[string]*istio.Service, len(u.Services))
	for k, p := range u.Services {
		if p == nil {
			out[k] = nil
			continue
		}
		out[k] = &istio.Service{Plan: p.Plan, Ports: p.Ports, Identities: istio.ServiceIdentities(p.Import, u.Clusters, self)}
	}
	return out
}

// wireTrust feeds the trust set to the xDS server (SDS validation contexts) and each
// remote cluster's roots to the health checker. The checker needs cluster -> trust
// domain, from the clusters/ records of the view: both inputs re-apply the pools.
func (a *Agent) wireTrust() {
	a.Service.OnView(func(v *view.View) {
		m := make(map[string]string, len(v.Clusters))
		for name, c := range v.Clusters {
			m[name] = c.TrustDomain
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		a.clusterTD = m
		a.applyRootsLocked()
	})
	a.Trust.Subscribe(func(s *trust.Set) error {
		if err := a.XDS.SetTrustBundles(s.X509Roots()); err != nil {
			return err
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		a.set = s
		a.applyRootsLocked()
		return nil
	})
}

func (a *Agent) applyRootsLocked() {
	if a.set == nil || a.clusterTD == nil {
		return
	}
	pools := a.set.PoolsByCluster(a.clusterTD)
	for c := range a.clusterTD {
		if c != a.cfg.Cluster {
			// nil (no bundle of that trust domain yet) keeps the checks unauthenticated.
			a.Health.SetRoots(c, pools[c])
		}
	}
}

// OnView registers fn for every new import view (call before Run).
func (a *Agent) OnView(fn func(*view.View)) { a.Service.OnView(fn) }

// Ready reports nil when every part is ready.
func (a *Agent) Ready() error {
	errs := multierror.Append(validate.NewList(), a.Service.Ready(), a.XDS.Ready())
	if a.Istio != nil {
		errs = multierror.Append(errs, a.Istio.Ready())
	}
	if a.Trust != nil {
		errs = multierror.Append(errs, a.Trust.Ready())
	}
	return errs.ErrorOrNil()
}

// Run runs every part until ctx ends or one fails; it returns the first failure.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type part struct {
		name string
		run  func(context.Context) error
	}
	parts := []part{{"federation", a.Service.Run}, {"health", a.Health.Run}, {"xds", a.XDS.Run},
		{"health-status", a.publishGatewayHealth}}
	if a.Trust != nil {
		parts = append(parts, part{"trust", a.Trust.Run})
	}
	if a.Istio != nil {
		parts = append(parts, part{"istio-mcp", a.Istio.Run}, part{"istio-source", a.istioSource.Run},
			part{"istio-status", a.publishIstioStatus})
	}
	errc := make(chan error, len(parts))
	var wg sync.WaitGroup
	for _, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.run(ctx); err != nil && !errors.Is(err, context.Canceled) && ctx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", p.name, err)
			}
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		a.log.Error("federation part failed; stopping", "err", err)
	}
	cancel()
	wg.Wait()
	return err
}
