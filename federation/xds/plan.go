package xds

import (
	"container/heap"
	"context"
	"github.com/meshfed/meshfed/api/fault"
	"log/slog"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/federation/health"
	"github.com/meshfed/meshfed/federation/planner"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/view"
)

// job is one service of a planning pass. Planning and resource building are pure and run
// in parallel; everything that touches server state runs serially around them.
type job struct {
	key string
	svc *view.Service
	st  *svcState

	plan planner.ServicePlan
	dec  planner.Decision

	ports      []uint32
	isNew      []bool // per port: not served before
	cds        bool   // (re)build CDS for every port (trust domains changed)
	tls        clusterTLS
	tlsKey     string
	inExp      *records.Export // this cluster's export, for the gateway
	inbound    bool            // (re)build the gateway's resources
	inPrev     []uint32        // inbound ports already served (their CDS stands)
	inRegion   string
	inFault    *fault.Fault // the drill fault the gateway's clusters carry
	resources  []built
	clas       []builtCLA
	panicPorts int
}

type built struct {
	cache, name, typ string
	r                types.Resource
	err              error
}

type builtCLA struct {
	port uint32
	name string
	cla  *endpointv3.ClusterLoadAssignment
	err  error
}

// parallelMin is the pass size from which planning and building use every core.
const parallelMin = 64

// parallel runs f(worker, i) for i in [0, n), on every core when n is large enough.
func parallel(n int, f func(worker, i int)) {
	workers := runtime.GOMAXPROCS(0)
	if n < parallelMin || workers < 2 {
		for i := 0; i < n; i++ {
			f(0, i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				f(w, i)
			}
		}()
	}
	wg.Wait()
}

// replan plans the given services and pushes what changed.
func (s *Server) replan(now time.Time, keys map[string]bool) {
	if len(keys) == 0 {
		return
	}
	start := time.Now()
	in := &planner.Input{Local: s.cluster, View: s.view, Now: now, StaleGrace: s.opts.StaleGrace,
		Health: func(c, a string) health.State {
			// s.usable is only read during the parallel phase.
			if u, ok := s.usable[health.Target{Cluster: c, Addr: a}]; ok && !u {
				return health.Down
			}
			return health.Up
		}}
	b := batch{}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted) // deterministic passes and logs

	// Serial: drop services that are gone, collect the rest.
	jobs := make([]*job, 0, len(sorted))
	var dropped []string
	if len(s.svcs) == 0 && len(sorted) > 1024 {
		// A first big pass: size the per-service maps once.
		s.svcs = make(map[string]*svcState, len(sorted))
		s.stab.Reserve(len(sorted))
		s.debugMu.Lock()
		s.debug = make(map[string]planner.ServicePlan, len(sorted))
		s.debugMu.Unlock()
		s.indexHint = len(sorted)
		defer func() { s.indexHint = 0 }()
	}
	for _, k := range sorted {
		svc := s.view.Services[k]
		st := s.svcs[k]
		if svc == nil {
			if st != nil {
				s.dropService(k, st, b)
				dropped = append(dropped, k)
			}
			continue
		}
		if st == nil {
			st = &svcState{cla: map[uint32]*endpointv3.ClusterLoadAssignment{}}
			s.svcs[k] = st
		}
		jobs = append(jobs, &job{key: k, svc: svc, st: st})
	}

	// Parallel: plan.
	parallel(len(jobs), func(_, i int) { jobs[i].plan = planner.PlanService(in, jobs[i].svc) })

	// Serial: stabilize, schedule, index, decide what to build.
	region := ""
	if rec := s.view.Clusters[s.cluster]; rec != nil {
		region = rec.Region
	}
	for _, j := range jobs {
		s.decide(in, j, region, b)
	}

	// Parallel: build resources.
	builders := make([]*builder, runtime.GOMAXPROCS(0))
	for i := range builders {
		builders[i] = newBuilder()
	}
	parallel(len(jobs), func(w, i int) { s.build(jobs[i], builders[w]) })

	// Serial: collect.
	for _, j := range jobs {
		s.collect(j, b)
	}

	for ck, o := range b {
		if len(o.set) == 0 && len(o.del) == 0 {
			continue
		}
		if err := s.caches[ck].UpdateResources(o.set, o.del); err != nil {
			s.log.Error("xds cache update failed", "cache", ck, "err", err)
		}
		s.m.updates.WithLabelValues(ck).Add(float64(len(o.set) + len(o.del)))
	}
	s.notify(jobs, dropped)
	s.m.services.Set(float64(len(s.svcs)))
	s.m.planSeconds.Observe(time.Since(start).Seconds())
	s.m.planServices.Observe(float64(len(keys)))
	n := 0
	for _, p := range s.panicking {
		n += p
	}
	s.m.panicking.Set(float64(n))
}

func (s *Server) decide(in *planner.Input, j *job, region string, b batch) {
	st, svc := j.st, j.svc
	s.index(j.key, st, svc)
	j.dec = s.stab.Apply(in.Now, j.plan)
	next := planner.NextEvent(in, svc)
	if j.dec.Held {
		s.m.held.Inc()
		if next.IsZero() || j.dec.RetryAt.Before(next) {
			next = j.dec.RetryAt
		}
	}
	if !next.Equal(st.wakeAt) {
		st.wakeAt = next
		if !next.IsZero() {
			heap.Push(&s.wakes, wake{at: next, key: j.key})
		}
	}
	if j.dec.Reassigned {
		s.m.reassigned.Inc()
	}

	j.ports = make([]uint32, 0, len(svc.Ports))
	for _, p := range svc.Ports {
		j.ports = append(j.ports, uint32(p.Port))
	}
	for _, p := range st.ports {
		if !slices.Contains(j.ports, p) {
			delete(st.cla, p)
			name := names.ClusterName(svc.Namespace, svc.Name, p)
			lname := names.ListenerName(svc.Namespace, svc.Name, p)
			b.del(keyEDS, name)
			b.del(keyGRPCCDS, name)
			b.del(keyEnvoyCDS, name)
			b.del(keyGRPCLDS, lname)
			b.del(keyGRPCRDS, lname)
		}
	}
	j.isNew = make([]bool, len(j.ports))
	for i, p := range j.ports {
		j.isNew[i] = !slices.Contains(st.ports, p)
	}
	j.tls = clusterTLS{TrustDomains: s.trustDomains(svc)}
	j.tlsKey = j.tls.key()
	j.cds = j.tlsKey != st.tlsKey

	if ce := svc.Exporter(s.cluster); ce != nil && ce.Export != nil {
		j.inExp = ce.Export
	}
	// By content: this cluster's own export comes from its discovery source, where
	// revision and times may not be set.
	j.inbound = !sameExport(st.inExp, j.inExp) || region != st.inRegion
	j.inRegion = region
	j.inPrev = st.inbound // collect replaces st.inbound, never edits it in place
	if j.inExp != nil {
		j.inFault = s.gatewayFault(in.Now, svc)
	}
	if !sameFault(j.inFault, st.inFault) {
		j.inbound = true
		j.inPrev = nil // every inbound cluster carries the fault, or stops carrying it
	}
}

// gatewayFault is the fault this cluster's gateways carry out for svc: the first live
// drill against this cluster with a gateway fault covering it (a drill whose deadline has
// passed is left out; the gateways end it by themselves anyway).
func (s *Server) gatewayFault(now time.Time, svc *view.Service) *fault.Fault {
	for _, d := range s.view.Drills {
		if d == nil || d.Cluster != s.cluster || !d.Covers(s.cluster, svc.Namespace, svc.Name) {
			continue
		}
		if f, ok := d.GatewayFault(); ok && f.Active(now) {
			return &f
		}
	}
	return nil
}

func sameFault(a, b *fault.Fault) bool {
	return (a == nil) == (b == nil) && (a == nil || *a == *b)
}

// build makes the job's resources; it reads only the job and immutable server fields.
func (s *Server) build(j *job, bld *builder) {
	svc := j.svc
	for i, p := range j.ports {
		name := names.ClusterName(svc.Namespace, svc.Name, p)
		if j.isNew[i] || j.cds {
			tc := j.tls
			tc.SNI = names.SNI{Port: p, Service: svc.Name, Namespace: svc.Namespace, Domain: s.opts.Domain}.String()
			g, err := buildGRPCCluster(name, tc, s.opts.CertProviderInstance)
			j.resources = append(j.resources, built{keyGRPCCDS, name, "cds", g, err})
			e, err := buildEnvoyCluster(name, tc, s.opts.EnvoyIdentitySecret)
			j.resources = append(j.resources, built{keyEnvoyCDS, name, "cds", e, err})
		}
		if j.isNew[i] {
			lname := names.ListenerName(svc.Namespace, svc.Name, p)
			l, err := buildListener(lname)
			j.resources = append(j.resources, built{keyGRPCLDS, lname, "lds", l, err})
			r, err := buildRoute(lname, names.ServiceHost(svc.Namespace, svc.Name), name)
			j.resources = append(j.resources, built{keyGRPCRDS, lname, "rds", r, err})
		}
		pp := j.dec.Plan.Port(p)
		if j.dec.Changed || j.isNew[i] {
			cla, err := buildCLA(name, pp, bld)
			j.clas = append(j.clas, builtCLA{port: p, name: name, cla: cla, err: err})
		}
		if pp != nil && len(pp.Levels) > 0 && pp.Levels[0].Panic {
			j.panicPorts++
		}
	}
	if j.inbound && j.inExp != nil {
		for _, p := range j.inExp.Ports {
			name := names.InboundClusterName(svc.Namespace, svc.Name, uint32(p.Port), s.opts.Domain)
			// The inbound cluster depends on its name alone: set it once, so a readiness
			// change pushes EDS to the gateways and not a CDS equal to the last one.
			if !slices.Contains(j.inPrev, uint32(p.Port)) {
				c, err := buildInboundCluster(name, j.inFault)
				j.resources = append(j.resources, built{keyGwCDS, name, "cds", c, err})
			}
			e, err := buildInboundCLA(name, s.cluster, j.inRegion, j.inExp, p)
			j.resources = append(j.resources, built{keyGwEDS, name, "eds", e, err})
		}
	}
}

func (s *Server) collect(j *job, b batch) {
	st, svc := j.st, j.svc
	for _, r := range j.resources {
		if r.err != nil {
			s.invalid(r.typ, r.name, r.err)
			continue
		}
		b.set(r.cache, r.name, r.r)
	}
	for i, c := range j.clas {
		switch {
		case c.err != nil:
			s.invalid("eds", c.name, c.err)
		// Push only what really changed on the wire (a stale flag, say, is not).
		case j.isNewPort(c.port) || !proto.Equal(c.cla, st.cla[c.port]):
			b.set(keyEDS, c.name, c.cla)
			st.cla[c.port] = c.cla
		}
		j.clas[i].cla = nil
	}
	if j.panicPorts > 0 {
		s.panicking[j.key] = j.panicPorts
	} else {
		delete(s.panicking, j.key)
	}
	st.ports, st.tlsKey = j.ports, j.tlsKey
	if j.inbound {
		var ports []uint32
		if j.inExp != nil {
			for _, p := range j.inExp.Ports {
				ports = append(ports, uint32(p.Port))
			}
		}
		for _, p := range st.inbound {
			if !slices.Contains(ports, p) {
				name := names.InboundClusterName(svc.Namespace, svc.Name, p, s.opts.Domain)
				b.del(keyGwCDS, name)
				b.del(keyGwEDS, name)
			}
		}
		st.inbound, st.inExp, st.inRegion, st.inFault = ports, j.inExp, j.inRegion, j.inFault
	}
	if j.dec.Changed {
		s.debugMu.Lock()
		s.debug[j.key] = j.dec.Plan
		s.debugMu.Unlock()
		lvl := slog.LevelDebug
		if j.dec.Reassigned || emptyPlan(&j.dec.Plan) {
			lvl = slog.LevelInfo
		}
		if s.log.Enabled(context.Background(), lvl) {
			s.log.Log(context.Background(), lvl, "plan changed", "service", j.key, "order", j.dec.Plan.Order(),
				"held", j.dec.Held, "excluded", j.dec.Plan.LeftOut(0))
		}
	}
}

func sameExport(a, b *records.Export) bool {
	if a == b {
		return true
	}
	return a != nil && b != nil && a.SameContent(b)
}

func (j *job) isNewPort(p uint32) bool {
	for i, q := range j.ports {
		if q == p {
			return j.isNew[i]
		}
	}
	return false
}

func emptyPlan(p *planner.ServicePlan) bool {
	for _, pp := range p.Ports {
		if len(pp.Levels) == 0 {
			return true
		}
	}
	return false
}

func (s *Server) invalid(typ, name string, err error) {
	s.m.invalid.WithLabelValues(typ).Inc()
	s.log.Error("built an invalid xDS resource; not serving it (a bug: please report)", "type", typ, "name", name, "err", err)
}
