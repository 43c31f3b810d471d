package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/keyspace/view"
)

// DefaultStaleGrace is how long a stale cluster's exports stay in the view.
const DefaultStaleGrace = 10 * time.Minute

// Config configures one cluster's federation service.
type Config struct {
	Cluster string
	Store   *store.Store
	// Source finds local exports; nil for a cluster that only imports.
	Source       Source
	HeartbeatTTL time.Duration // default 10s
	StaleGrace   time.Duration // default 10m
	// Instance names this process in the heartbeat (default host/pid).
	Instance string
	// Elector, when set, lets several replicas of one cluster's federation run safely:
	// every replica mirrors etcd and serves the view (and so xDS), but only the leader
	// runs the discovery source, publishes exports and holds the heartbeat.
	Elector  Elector
	Log      *slog.Logger
	Registry prometheus.Registerer
}

// Source finds this cluster's exports: Run calls emit with every export of the cluster
// whenever they may have changed (whole snapshots, never deltas) until ctx ends. The
// discovery sources are adapted to it by discovery.ExportsOnly (the agent does so): the
// service does not import discovery.
type Source interface {
	Run(ctx context.Context, emit func(exports []*records.Export)) error
}

// Elector runs fn while this replica leads; fn's context ends when leadership is lost.
// Run returns when ctx ends.
type Elector interface {
	Run(ctx context.Context, lead func(ctx context.Context)) error
}

// Service is a running federation service.
type Service struct {
	cfg    Config
	log    *slog.Logger
	m      *metrics
	mr     *view.Mirror
	pub    *publisher
	syncer *store.Syncer
	hb     *store.Heartbeat
	hbMu   sync.Mutex
	hbHeld chan struct{} // closed once this leadership term holds the heartbeat

	mu        sync.RWMutex
	view      *view.View
	subs      []func(*view.View)
	started   bool
	srcErr    error
	selfKnown bool
	warned    bool
	leading   bool
}

// New checks cfg and prepares the service.
func New(cfg Config) (*Service, error) {
	var errs validate.Errors
	errs.AddErr("cluster", validate.DNSLabel(cfg.Cluster))
	if cfg.Store == nil {
		errs.Add("store", "an etcd store is required")
	}
	if cfg.StaleGrace < 0 || cfg.HeartbeatTTL < 0 {
		errs.Add("stale-grace/heartbeat-ttl", "must not be negative")
	}
	if cfg.HeartbeatTTL != 0 && cfg.HeartbeatTTL < 2*time.Second {
		errs.Add("heartbeat-ttl", "%v is too short: etcd leases need at least 2s", cfg.HeartbeatTTL)
	}
	if err := errs.Err(); err != nil {
		return nil, fmt.Errorf("federation service: %w", err)
	}
	if cfg.StaleGrace == 0 {
		cfg.StaleGrace = DefaultStaleGrace
	}
	if cfg.HeartbeatTTL == 0 {
		cfg.HeartbeatTTL = store.DefaultHeartbeatTTL
	}
	if cfg.Instance == "" {
		h, _ := os.Hostname()
		cfg.Instance = fmt.Sprintf("%s/%d", h, os.Getpid())
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("cluster", cfg.Cluster)
	m := newMetrics(cfg.Registry)
	s := &Service{cfg: cfg, log: log, m: m}
	badSeen := map[string]int64{}
	s.mr = view.NewMirror(cfg.Store.KS, cfg.Cluster, view.MirrorHooks{
		Bad: func(key string, modRev int64, err error) {
			m.invalidRecords.Inc()
			if badSeen[key] == modRev {
				return
			}
			badSeen[key] = modRev
			log.Error("ignoring invalid record in etcd; the last good value stays in use", "key", key, "err", err)
		},
		LiveExport: func(e *records.Export) {
			if now := time.Now(); e.UpdatedAt.After(now.Add(-time.Hour)) {
				m.propagation.Observe(now.Sub(e.UpdatedAt).Seconds())
			}
		},
	})
	s.pub = newPublisher(cfg.Store, cfg.Cluster, log, m)
	s.pub.onLocal = s.mr.SetLocal
	s.syncer = cfg.Store.NewSyncer(cfg.Store.KS.Prefix(), s.mr)
	var resyncs int
	s.syncer.OnStatus = func(st store.SyncStatus) {
		m.watchUp.Set(b2f(st.Watching))
		if st.Resyncs > resyncs {
			m.resyncs.Add(float64(st.Resyncs - resyncs))
			resyncs = st.Resyncs
		}
	}
	s.hb = cfg.Store.NewHeartbeat(cfg.Cluster, cfg.Instance, cfg.HeartbeatTTL)
	s.hb.OnChange = func(alive bool, err error) {
		m.heartbeatUp.Set(b2f(alive))
		if alive {
			log.Info("heartbeat held", "ttl", cfg.HeartbeatTTL)
			s.hbMu.Lock()
			if s.hbHeld != nil {
				select {
				case <-s.hbHeld:
				default:
					close(s.hbHeld)
				}
			}
			s.hbMu.Unlock()
		}
	}
	s.view = &view.View{Services: map[string]*view.Service{}, Clusters: map[string]*records.Cluster{}, Alive: map[string]bool{}, Policies: map[string]*records.Policy{}}
	return s, nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// OnView registers fn to receive every new import view (call before Run). Calls are
// serial, from one goroutine; fn must not block for long.
func (s *Service) OnView(fn func(*view.View)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subs = append(s.subs, fn)
}

// View returns the current import view (immutable).
func (s *Service) View() *view.View {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.view
}

// Cluster is this service's cluster name.
func (s *Service) Cluster() string { return s.cfg.Cluster }

// Store is the service's etcd store.
func (s *Service) Store() *store.Store { return s.cfg.Store }

// Ready reports nil once the keyspace has been listed and the local exports published.
func (s *Service) Ready() error {
	st := s.syncer.Status()
	if !st.Synced {
		if st.LastError != nil {
			return fmt.Errorf("etcd not synced yet: %w", st.LastError)
		}
		return errors.New("etcd not synced yet")
	}
	s.mu.RLock()
	srcErr := s.srcErr
	s.mu.RUnlock()
	if srcErr != nil {
		return fmt.Errorf("discovery source: %w", srcErr)
	}
	if s.cfg.Source != nil && s.Leading() && !s.pub.isSynced() {
		if ok, err := s.hb.Alive(); !ok {
			if err != nil {
				return fmt.Errorf("local exports not published yet: waiting for the heartbeat lease: %w", err)
			}
			return errors.New("local exports not published yet: waiting for the heartbeat lease")
		}
		return errors.New("local exports not published yet")
	}
	return nil
}

// Leading reports whether this replica runs the writing half (always, without an elector).
func (s *Service) Leading() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.leading
}

func (s *Service) setLeading(v bool) {
	s.mu.Lock()
	s.leading = v
	s.mu.Unlock()
	s.m.leader.Set(b2f(v))
}

// SyncStatus is the etcd mirror's status.
func (s *Service) SyncStatus() store.SyncStatus { return s.syncer.Status() }

// HeartbeatAlive reports whether the heartbeat key is held.
func (s *Service) HeartbeatAlive() bool { ok, _ := s.hb.Alive(); return ok }

// Run runs the service until ctx ends. A discovery source that fails at start (a bad
// exports file, an unreachable API server) ends Run with its error.
func (s *Service) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("federation service: Run called twice")
	}
	s.started = true
	s.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	goRun := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	goRun(func() { _ = s.syncer.Run(ctx) })
	goRun(func() { s.build(ctx) })
	errc := make(chan error, 1)
	// The writing half: heartbeat, source and publisher. With an elector only the leader
	// runs it; a replica that loses leadership stops writing at once.
	writer := func(ctx context.Context) {
		var wg sync.WaitGroup
		held := make(chan struct{})
		s.hbMu.Lock()
		s.hbHeld = held
		s.hbMu.Unlock()
		wg.Add(1)
		go func() { defer wg.Done(); _ = s.hb.Run(ctx) }()
		if s.cfg.Source != nil {
			wg.Add(2)
			// Exports go out only once the heartbeat is held: written before it, peers
			// would see them as a stale cluster's and warn of a lost heartbeat. The
			// source runs meanwhile; the publisher takes its latest snapshot.
			go func() {
				defer wg.Done()
				select {
				case <-held:
				case <-ctx.Done():
					return
				}
				s.pub.run(ctx)
			}()
			go func() {
				defer wg.Done()
				if err := s.cfg.Source.Run(ctx, s.pub.offer); err != nil && ctx.Err() == nil {
					s.mu.Lock()
					s.srcErr = err
					s.mu.Unlock()
					select {
					case errc <- fmt.Errorf("discovery source: %w", err):
					default:
					}
				}
			}()
		}
		wg.Wait()
	}
	if s.cfg.Elector == nil {
		s.setLeading(true)
		goRun(func() { writer(ctx) })
	} else {
		goRun(func() {
			err := s.cfg.Elector.Run(ctx, func(lctx context.Context) {
				s.log.Info("leading: this replica publishes exports and holds the heartbeat")
				s.setLeading(true)
				writer(lctx)
				s.setLeading(false)
				s.pub.reset()
				s.mr.ClearLocal()
				s.log.Info("no longer leading: another replica publishes")
			})
			if err != nil && ctx.Err() == nil {
				select {
				case errc <- fmt.Errorf("leader election: %w", err):
				default:
				}
			}
		})
	}
	s.log.Info("federation service running", "prefix", s.cfg.Store.KS.Prefix(), "stale_grace", s.cfg.StaleGrace)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	wg.Wait()
	return err
}

// build turns mirror changes into new views until ctx ends.
func (s *Service) build(ctx context.Context) {
	stale := map[string]time.Time{}
	expired := map[string]bool{}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.mr.Changed():
		case <-timer.C:
			// A stale cluster's grace ended: re-merge its services without it.
			now := time.Now()
			var keys []string
			for c, since := range stale {
				if !expired[c] && now.Sub(since) >= s.cfg.StaleGrace {
					expired[c] = true
					keys = append(keys, s.mr.ServicesOf(c)...)
					s.log.Warn("stale cluster's grace period is over: its exports leave the import view", "stale_cluster", c, "stale_since", since)
				}
			}
			s.mr.MarkDirty(keys)
			continue
		}
		start := time.Now()
		snap := s.mr.Take(&view.Staleness{Since: stale, Now: start, Grace: s.cfg.StaleGrace})
		s.trackStale(snap, stale, expired, start)
		next := s.apply(snap)
		s.m.viewBuilds.Inc()
		s.m.viewBuildSecs.Observe(time.Since(start).Seconds())
		// Arm the timer for the earliest grace expiry still ahead.
		var due time.Duration = time.Hour
		for c, since := range stale {
			if !expired[c] {
				if d := since.Add(s.cfg.StaleGrace).Sub(start); d < due {
					due = max(d, time.Millisecond)
				}
			}
		}
		timer.Reset(due)
		if next != nil {
			s.publish(next)
		}
	}
}

func (s *Service) trackStale(snap *view.Changes, stale map[string]time.Time, expired map[string]bool, now time.Time) {
	for c := range snap.Exporters {
		if snap.Alive[c] {
			if _, was := stale[c]; was {
				s.log.Info("cluster heartbeat is back: no longer stale", "other_cluster", c)
			}
			delete(stale, c)
			delete(expired, c)
			continue
		}
		if _, ok := stale[c]; !ok {
			stale[c] = now
			s.log.Warn("cluster heartbeat lost: its exports are kept, marked stale, until the grace period ends",
				"other_cluster", c, "grace", s.cfg.StaleGrace)
		}
	}
	for c := range stale {
		if !snap.Exporters[c] {
			delete(stale, c) // no exports left
			delete(expired, c)
		}
	}
	n := 0
	s.m.clusterStale.Reset()
	for c := range stale {
		if !expired[c] {
			n++
			s.m.clusterStale.WithLabelValues(c).Set(1)
		}
	}
	s.m.staleClusters.Set(float64(n))
}

// apply builds the next view from the previous one and the changes; nil when nothing
// visible changed.
func (s *Service) apply(snap *view.Changes) *view.View {
	s.mu.RLock()
	old := s.view
	s.mu.RUnlock()
	nv, services, changed := view.Next(old, snap)
	for _, c := range services {
		if d := describeChange(c.Key, c.Prev, c.Cur); d != "" {
			s.log.Info("import view changed", "service", c.Key, "change", d)
		}
	}
	s.noteSelf(snap.Clusters)
	s.m.services.Set(float64(len(nv.Services)))
	s.m.viewRevision.Set(float64(snap.Revision))
	if !changed && old.Revision != 0 {
		// Keep the revision current for readers, without a push to subscribers.
		s.mu.Lock()
		cp := *old
		cp.Revision = snap.Revision
		s.view = &cp
		s.mu.Unlock()
		return nil
	}
	// Unless the whole view was rebuilt, nv.Changed lists what consumers (the xDS
	// planner) re-plan. Rounds that published nothing had no real change, so the list
	// covers everything since the last push.
	s.mu.Lock()
	s.view = nv
	s.mu.Unlock()
	return nv
}

func (s *Service) publish(v *view.View) {
	s.mu.RLock()
	subs := append(([]func(*view.View))(nil), s.subs...)
	s.mu.RUnlock()
	for _, fn := range subs {
		fn(v)
	}
}

// noteSelf warns once while this cluster has no clusters/<name> record (it still
// publishes; peers just cannot reach it through a gateway until `meshfed join`).
func (s *Service) noteSelf(clusters map[string]*records.Cluster) {
	_, ok := clusters[s.cfg.Cluster]
	switch {
	case ok && !s.selfKnown:
		s.selfKnown = true
		s.log.Info("cluster record found", "gateways", strings.Join(clusters[s.cfg.Cluster].Gateways, ","))
	case !ok && !s.warned:
		s.warned = true
		s.log.Warn("no cluster record for this cluster yet: exports are published, but other clusters cannot route to them until `meshfed join` writes clusters/" + s.cfg.Cluster)
	case !ok && s.selfKnown:
		s.selfKnown = false
		s.log.Warn("cluster record removed: other clusters can no longer route to this cluster")
	}
}

// describeChange summarises how a service changed, or "" when nothing visible did.
func describeChange(key string, prev, cur *view.Service) string {
	p, c := summary(prev), summary(cur)
	switch {
	case p == c:
		return ""
	case prev == nil:
		return "added: " + c
	case cur == nil:
		return "removed (was " + p + ")"
	}
	return p + " -> " + c
}

func summary(s *view.Service) string {
	if s == nil {
		return ""
	}
	var b strings.Builder
	ports := make([]string, 0, len(s.Ports))
	for _, p := range s.Ports {
		ports = append(ports, fmt.Sprint(p.Port))
	}
	fmt.Fprintf(&b, "%s ports=%s clusters=[", s.Type, strings.Join(ports, ","))
	for i, c := range s.Clusters {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s:%d", c.Cluster, c.ReadyEndpoints())
		if c.Stale {
			b.WriteString("(stale)")
		}
	}
	b.WriteString("]")
	if len(s.Conflicts) > 0 {
		cs := make([]string, 0, len(s.Conflicts))
		for _, c := range s.Conflicts {
			cs = append(cs, c.Cluster+":"+c.Field)
		}
		sort.Strings(cs)
		fmt.Fprintf(&b, " conflicts=%s", strings.Join(cs, ","))
	}
	return b.String()
}
