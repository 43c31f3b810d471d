package drill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/federation/health"
	"github.com/meshfed/meshfed/federation/planner"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/keyspace/view"
	"github.com/meshfed/meshfed/operator/drill/internal/loadgen"
)

// planRouter routes the drill's requests the way cluster `from` routes them: it mirrors
// the keyspace from etcd (one watch) into the federation services' view builder
// (view.Mirror, re-merging only the services that changed), checks every gateway like a federation service does
// (federation/health, same defaults), plans with federation/planner and damps changes
// with planner.Stabilizer, then sends each request to priority 0 (weighted among its
// endpoints). It measures the etcd watch → plan path; a client behind a real xDS server
// adds that server's push latency on top (see docs/operations.md, "Drills").
type planRouter struct {
	st      *store.Store
	from    string
	ns      string
	name    string
	port    uint32
	checker *health.Checker
	stab    *planner.Stabilizer
	onPlan  func(order string)

	mirror *view.Mirror

	mu      sync.Mutex
	view    *view.View
	levels  []planner.Level
	order   string
	synced  chan struct{}
	once    sync.Once
	kick    chan struct{}
	retryAt time.Time
}

var _ loadgen.Router = (*planRouter)(nil)
var _ store.Handler = (*planRouter)(nil)

func newPlanRouter(st *store.Store, from, ns, name string, port uint32, minReassign time.Duration, onPlan func(string)) (*planRouter, error) {
	chk, err := health.New(health.Options{}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		return nil, err
	}
	return &planRouter{st: st, from: from, ns: ns, name: name, port: port, checker: chk,
		stab: planner.NewStabilizer(minReassign), onPlan: onPlan, mirror: view.NewMirror(st.KS, "", view.MirrorHooks{}),
		synced: make(chan struct{}), kick: make(chan struct{}, 1)}, nil
}

// Reset implements store.Handler.
func (r *planRouter) Reset(kvs []store.KV, rev int64) {
	r.mirror.Reset(kvs, rev)
	r.rebuild()
	r.once.Do(func() { close(r.synced) })
}

// Apply implements store.Handler.
func (r *planRouter) Apply(evs []store.Event, rev int64) {
	r.mirror.Apply(evs, rev)
	r.rebuild()
}

// rebuild takes the mirror's changes into the view (a cluster without heartbeat stays,
// stale, as in status: the drill does not know since when).
func (r *planRouter) rebuild() {
	r.mu.Lock()
	r.view, _, _ = view.Next(r.view, r.mirror.Take(nil))
	targets := map[string][]string{}
	for n, c := range r.view.Clusters {
		if n != r.from {
			targets[n] = c.Gateways
		}
	}
	r.mu.Unlock()
	r.checker.SetTargets(targets)
	r.replan()
}

func (r *planRouter) replan() {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.view == nil {
		return
	}
	svc := r.view.Services[view.Key(r.ns, r.name)]
	if svc == nil {
		svc = &view.Service{Namespace: r.ns, Name: r.name}
	}
	in := &planner.Input{Local: r.from, View: r.view, Now: now, Health: r.checker.State}
	d := r.stab.Apply(now, planner.PlanService(in, svc))
	r.retryAt = time.Time{}
	if d.Held {
		r.retryAt = d.RetryAt
	}
	if next := planner.NextEvent(in, svc); !next.IsZero() && (r.retryAt.IsZero() || next.Before(r.retryAt)) {
		r.retryAt = next
	}
	r.levels = nil
	if pp := d.Plan.Port(r.port); pp != nil {
		r.levels = pp.Levels
	}
	order := d.Plan.PortString(r.port)
	if d.Held {
		order += " (a change is held until " + d.RetryAt.Format("15:04:05.000") + ")"
	}
	if order != r.order {
		r.order = order
		if r.onPlan != nil {
			r.onPlan(order)
		}
	}
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// run mirrors etcd, checks gateways and replans on every change (and when a held change
// is due) until ctx ends.
func (r *planRouter) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = r.st.NewSyncer(r.st.KS.Prefix(), r).Run(ctx) }()
	go func() { defer wg.Done(); _ = r.checker.Run(ctx) }()
	changes := r.checker.Subscribe()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		r.mu.Lock()
		at := r.retryAt
		r.mu.Unlock()
		if !at.IsZero() {
			timer.Reset(max(time.Until(at), time.Millisecond))
		}
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-changes:
			r.replan()
		case <-timer.C:
			r.replan()
		case <-r.kick:
		}
	}
}

// waitSynced waits for the first full list of the keyspace.
func (r *planRouter) waitSynced(ctx context.Context) error {
	select {
	case <-r.synced:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Order is the current order, e.g. "west > north".
func (r *planRouter) Order() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.order
}

// Route implements loadgen.Router.
func (r *planRouter) Route() (loadgen.Route, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.levels) == 0 {
		return loadgen.Route{}, fmt.Errorf("no cluster serves %s/%s port %d as seen from %s", r.ns, r.name, r.port, r.from)
	}
	lv := r.levels[0]
	if len(lv.Endpoints) == 0 {
		return loadgen.Route{}, errors.New("priority 0 has no endpoint")
	}
	var total uint64
	for _, e := range lv.Endpoints {
		total += uint64(max(e.Weight, 1))
	}
	pick := rand.Uint64N(total)
	ep := lv.Endpoints[len(lv.Endpoints)-1]
	for _, e := range lv.Endpoints {
		w := uint64(max(e.Weight, 1))
		if pick < w {
			ep = e
			break
		}
		pick -= w
	}
	return loadgen.Route{Cluster: lv.Cluster, Addr: ep.HostPort(), SNI: names.ServiceSNI(r.ns, r.name, r.port)}, nil
}

// directRouter sends every request to one address (a client-side proxy or a load
// balancer that does the failover itself); the serving cluster comes from the response.
type directRouter struct{ addr, sni string }

func (d directRouter) Route() (loadgen.Route, error) {
	return loadgen.Route{Addr: d.addr, SNI: d.sni}, nil
}
