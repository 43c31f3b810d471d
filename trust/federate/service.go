package federate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/internal/ctxtime"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/source"
)

// Config of the trust component of one cluster's federation service.
type Config struct {
	// Cluster is this cluster's name (acks are written under it).
	Cluster string
	// TrustDomain is the cluster's own trust domain; with Source set, the cluster publishes
	// its bundle to bundles/<TrustDomain>. Empty: the cluster only consumes bundles.
	TrustDomain string
	Source      source.Source
	// BundleDir receives <td>.pem per trust domain and bundle-map.json (empty: no files).
	BundleDir string
	// Endpoint serves the SPIFFE bundle endpoint (nil: none).
	Endpoint *EndpointConfig
	// ConfigMap receives the same files as BundleDir (nil: none).
	ConfigMap *ConfigMapOutput
	Store     *store.Store
	Log       *slog.Logger
	// Registry receives the metrics (nil: not registered).
	Registry prometheus.Registerer
	// RetryInterval paces retries of failed publishes and outputs (default 2 s).
	RetryInterval time.Duration
}

// Service is the running trust component.
type Service struct {
	cfg Config
	log *slog.Logger
	m   *metrics

	pub    *publisher
	mirror *mirror
	ep     *endpointServer
	syncer *store.Syncer
	// rotSyncer watches rotations/ for the rotation phase metric.
	rotSyncer *store.Syncer

	mu       sync.Mutex
	current  *trust.Set
	records  map[string]*records.Bundle
	subs     map[int]func(*trust.Set) error
	nextSub  int
	applied  bool
	outputCh chan struct{}
	istiod   bool // acks say the cluster feeds istiod (AckForIstiod)
}

// AckForIstiod makes every ack this service writes say that the cluster feeds istiod
// (records.Ack.Istiod), so rotation gates also wait for the cluster's istiods to give their
// proxies the bundle (acks/<cluster>/istio/). The agent calls it before Run when it serves
// istiod (--istio-mcp-listen).
func (s *Service) AckForIstiod() {
	s.mu.Lock()
	s.istiod = true
	s.mu.Unlock()
}

// Fields of Config as its errors name them (*validate.FieldError); a command maps them to
// its flags.
const (
	FieldTrustDomain     = "trust domain"
	FieldEndpoint        = "bundle endpoint"
	FieldEndpointCertKey = "bundle endpoint certificate/key"
	FieldConfigMap       = "bundle ConfigMap"
)

// New checks the configuration and builds the service (nothing runs until Run).
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil {
		return nil, errors.New("trust: no store")
	}
	if cfg.Cluster == "" {
		return nil, errors.New("trust: no cluster name")
	}
	if cfg.Source != nil && cfg.TrustDomain == "" {
		return nil, &validate.FieldError{Field: FieldTrustDomain, Msg: "a bundle source needs the trust domain the bundle belongs to"}
	}
	if cfg.TrustDomain != "" {
		if _, err := trust.ParseTrustDomain(cfg.TrustDomain); err != nil {
			return nil, &validate.FieldError{Field: FieldTrustDomain, Msg: err.Error()}
		}
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 2 * time.Second
	}
	s := &Service{cfg: cfg, log: cfg.Log.With("component", "trust"), subs: map[int]func(*trust.Set) error{}, outputCh: make(chan struct{}, 1)}
	s.m = newMetrics(cfg.Registry, s.Set)
	s.mirror = newMirror(s)
	if cfg.Source != nil {
		s.pub = newPublisher(s)
	}
	if cfg.Endpoint != nil {
		ep, err := newEndpointServer(s, *cfg.Endpoint)
		if err != nil {
			return nil, err
		}
		s.ep = ep
	}
	s.syncer = cfg.Store.NewSyncer(cfg.Store.KS.Family("bundles"), s.mirror)
	s.rotSyncer = cfg.Store.NewSyncer(cfg.Store.KS.Family(records.KindRotation), newRotationWatch(s))
	return s, nil
}

// Run runs every part until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.syncer.Run(ctx) })
	g.Go(func() error { return s.rotSyncer.Run(ctx) })
	g.Go(func() error { return s.runOutputs(ctx) })
	if s.pub != nil {
		g.Go(func() error { return s.pub.run(ctx) })
	}
	if s.ep != nil {
		g.Go(func() error { return s.ep.run(ctx) })
	}
	return g.Wait()
}

// Set is the current federated set (nil before the first sync).
func (s *Service) Set() *trust.Set {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}

// Subscribe calls fn with every new federated set, and at once with the current one if
// there is one. An error from fn holds back the acks (the set is not written out yet) and
// fn is called again after RetryInterval. Calls are never concurrent. The returned
// function removes the subscription.
func (s *Service) Subscribe(fn func(*trust.Set) error) (cancel func()) {
	s.mu.Lock()
	id := s.nextSub
	s.nextSub++
	s.subs[id] = fn
	s.applied = false // the new subscriber has not seen the current set yet
	s.mu.Unlock()
	s.kick()
	return func() {
		s.mu.Lock()
		delete(s.subs, id)
		s.mu.Unlock()
	}
}

// Ready reports nil once the bundles have been listed from etcd and written out at least
// once (for /readyz).
func (s *Service) Ready() error {
	st := s.syncer.Status()
	if !st.Synced {
		if st.LastError != nil {
			return fmt.Errorf("bundles not synced from etcd yet: %v", st.LastError)
		}
		return errors.New("bundles not synced from etcd yet")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.applied && s.current != nil {
		return errors.New("bundles not written out yet")
	}
	return nil
}

// EndpointAddr is the bundle endpoint's bound address ("" without an endpoint or before Run
// has bound it).
func (s *Service) EndpointAddr() string {
	if s.ep == nil {
		return ""
	}
	return s.ep.Addr()
}

// PublishStatus says what happened to the cluster's own bundle last (for status pages).
func (s *Service) PublishStatus() PublishStatus {
	if s.pub == nil {
		return PublishStatus{}
	}
	return s.pub.status()
}

// setCurrent installs a new set from the mirror and wakes the output loop.
func (s *Service) setCurrent(set *trust.Set) {
	s.mu.Lock()
	s.current = set
	s.applied = false
	s.mu.Unlock()
	s.kick()
	if s.pub != nil {
		s.pub.kick()
	}
}

func (s *Service) kick() {
	select {
	case s.outputCh <- struct{}{}:
	default:
	}
}

// runOutputs writes every new set out, then acks it; on failure it retries and acks
// nothing (an ack promises the set is written out).
func (s *Service) runOutputs(ctx context.Context) error {
	out := newOutputs(s)
	acked := map[string]ackKey{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.outputCh:
		}
		s.mu.Lock()
		set, done := s.current, s.applied
		subs := make([]func(*trust.Set) error, 0, len(s.subs))
		for _, f := range s.subs {
			subs = append(subs, f)
		}
		s.mu.Unlock()
		if set == nil || done {
			continue
		}
		err := out.write(ctx, set, subs)
		if err == nil {
			err = s.ack(ctx, set, acked)
		}
		if err != nil {
			s.log.Error("writing out trust bundles failed; retrying", "err", err)
			go func() {
				if ctxtime.Sleep(ctx, s.cfg.RetryInterval) {
					s.kick()
				}
			}()
			continue
		}
		s.mu.Lock()
		if s.current == set {
			s.applied = true
		}
		s.mu.Unlock()
	}
}

type ackKey struct {
	seq    uint64
	digest string
}
