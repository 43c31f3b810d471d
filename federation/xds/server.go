package xds

import (
	"container/heap"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/meshfed/meshfed/api/fault"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/federation/health"
	"github.com/meshfed/meshfed/federation/planner"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/view"
)

// DefaultListen is the xDS listen address (loopback: data planes of this host only).
const DefaultListen = "127.0.0.1:15010"

// connectTimeout is the CDS connect timeout (Envoy; grpc-go ignores it).
const connectTimeout = 2 * time.Second

// Options tune the server; zero values take the defaults.
type Options struct {
	// Listen is the xDS address (default 127.0.0.1:15010).
	Listen string
	// StaleGrace: a cluster whose heartbeat is gone is dropped this long after (default
	// 10m), earlier if its gateway fails health checks.
	StaleGrace time.Duration
	// MinReassign is the shortest time between two priority reassignments of one service
	// unless a cluster goes away (default 10s).
	MinReassign time.Duration
	// CertProviderInstance is the certificate provider instance name proxyless gRPC
	// bootstraps define, used for identity and roots (default "meshfed").
	CertProviderInstance string
	// EnvoyIdentitySecret is the SDS secret name of an Envoy workload's certificate
	// (default "meshfed-identity", a static secret in Envoy's bootstrap).
	EnvoyIdentitySecret string
	// Domain is the cluster DNS domain in SNI names (default cluster.local).
	Domain string
	// ServerTLS, when set, serves xDS over TLS (set ClientAuth for mTLS); nil serves
	// plaintext, which is only right on loopback.
	ServerTLS *tls.Config
	// OnPlans, when set, receives every pass's served plans (one plan, several outputs:
	// federation/istio feeds istiod from it). Called on the server's goroutine: it must
	// return quickly and must not modify the update.
	OnPlans func(PlanUpdate)
}

func (o *Options) defaults() {
	if o.Listen == "" {
		o.Listen = DefaultListen
	}
	if o.StaleGrace <= 0 {
		o.StaleGrace = planner.DefaultStaleGrace
	}
	if o.MinReassign <= 0 {
		o.MinReassign = planner.DefaultMinReassign
	}
	if o.CertProviderInstance == "" {
		o.CertProviderInstance = DefaultCertProviderInstance
	}
	if o.EnvoyIdentitySecret == "" {
		o.EnvoyIdentitySecret = DefaultEnvoyIdentitySecret
	}
	if o.Domain == "" {
		o.Domain = names.DefaultDomain
	}
}

// HealthSource is what the server needs from the gateway health checker.
type HealthSource interface {
	// SetTargets replaces the checked gateway addresses (cluster → addresses).
	SetTargets(map[string][]string)
	State(cluster, addr string) health.State
	// Subscribe returns a channel that receives after state changes.
	Subscribe() <-chan struct{}
}

var _ HealthSource = (*health.Checker)(nil)

// Server serves failover-aware xDS for one cluster. Make it with New, then Run it.
type Server struct {
	cluster string
	views   <-chan *view.View
	hc      HealthSource
	log     *slog.Logger
	opts    Options
	m       *metrics

	caches map[string]*cachev3.LinearCache
	mux    *cachev3.MuxCache

	lnMu sync.Mutex
	ln   net.Listener

	served    chan struct{} // closed after the first plan is in the caches
	servedOne sync.Once
	ready     atomic.Bool

	streamsMu sync.Mutex
	streams   map[int64]string // stream id → class (after its first request)

	debugMu sync.Mutex
	debug   map[string]planner.ServicePlan

	// Owned by the Run goroutine.
	view      *view.View
	stab      *planner.Stabilizer
	svcs      map[string]*svcState
	byCluster map[string]map[string]bool // cluster → keys of services it exports
	wakes     wakeHeap
	targets   map[string][]string
	usable    map[health.Target]bool
	panicking map[string]int // service key → ports in panic
	indexHint int            // expected services per cluster during a first big pass
}

type svcState struct {
	ports    []uint32 // outbound ports served
	cla      map[uint32]*endpointv3.ClusterLoadAssignment
	tlsKey   string
	inbound  []uint32        // ports served to the gateway
	inExp    *records.Export // the local export they were built from
	inRegion string
	inFault  *fault.Fault // the drill fault their CDS carries

	clusters []string
	wakeAt   time.Time
}

// New makes the xDS server of cluster. views brings every new import view (the server
// always works on the latest: it drains the channel, so a sender may block only briefly);
// hc is the gateway health checker, whose targets the server sets from the clusters/
// records. reg receives the metrics (nil: not registered).
func New(cluster string, views <-chan *view.View, hc HealthSource, log *slog.Logger, reg prometheus.Registerer, opts Options) (*Server, error) {
	if cluster == "" {
		return nil, errors.New("xds: cluster name is required")
	}
	if views == nil || hc == nil {
		return nil, errors.New("xds: a view channel and a health source are required")
	}
	opts.defaults()
	if log == nil {
		log = slog.Default()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cluster: cluster, views: views, hc: hc, log: log.With("component", "xds"), opts: opts, m: m,
		caches: map[string]*cachev3.LinearCache{}, served: make(chan struct{}),
		streams: map[int64]string{}, debug: map[string]planner.ServicePlan{},
		stab: planner.NewStabilizer(opts.MinReassign), svcs: map[string]*svcState{},
		byCluster: map[string]map[string]bool{}, usable: map[health.Target]bool{}, panicking: map[string]int{},
	}
	// A per-process version prefix: a client that reconnects after a restart holds
	// versions of another process and gets everything again.
	var b [4]byte
	_, _ = rand.Read(b[:])
	prefix := hex.EncodeToString(b[:]) + "-"
	for key, typ := range cacheTypes {
		s.caches[key] = cachev3.NewLinearCache(typ, cachev3.WithVersionPrefix(prefix))
	}
	s.mux = &cachev3.MuxCache{
		Classify:      func(r *cachev3.Request) string { return cacheKey(r.GetNode(), r.GetTypeUrl()) },
		ClassifyDelta: func(r *cachev3.DeltaRequest) string { return cacheKey(r.GetNode(), r.GetTypeUrl()) },
		Caches:        map[string]cachev3.Cache{},
	}
	for k, c := range s.caches {
		s.mux.Caches[k] = c
	}
	return s, nil
}

// FieldListen is Options.Listen as Listen's errors (*validate.FieldError) refer to it
// (validate.Ref): a command names its flag.
const FieldListen = "xds Options.Listen"

// Listen binds the xDS address (Run does it if not done). Call it first when the bound
// address must be known before Run (port 0). Its error is a *validate.FieldError
// referring to FieldListen.
func (s *Server) Listen() error {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	if s.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.opts.Listen)
	if err != nil {
		return &validate.FieldError{Msg: fmt.Sprintf("xds listen %s (%s): %v", s.opts.Listen, validate.Ref(FieldListen), err), Err: err}
	}
	s.ln = ln
	return nil
}

// Addr is the bound address ("" before Listen).
func (s *Server) Addr() string {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Ready is nil once the first plan is served (for /readyz).
func (s *Server) Ready() error {
	if !s.ready.Load() {
		return errors.New("xds: no import view received yet")
	}
	return nil
}

// SetTrustBundles replaces the federated trust bundles (trust domain → roots) served to
// Envoy as SDS validation contexts: one per trust domain and the SPIFFE validator over all.
// Safe to call from any goroutine, before or during Run.
func (s *Server) SetTrustBundles(bundles map[string][]*x509.Certificate) error {
	secrets, err := buildSecrets(bundles)
	if err != nil {
		s.m.invalid.WithLabelValues("sds").Inc()
		return fmt.Errorf("xds trust bundles: %w", err)
	}
	c := s.caches[keyEnvoySDS]
	set := make(map[string]types.Resource, len(secrets))
	for n, sec := range secrets {
		set[n] = sec
	}
	var del []string
	for n := range c.GetResources() {
		if _, ok := set[n]; !ok {
			del = append(del, n)
		}
	}
	if err := c.UpdateResources(set, del); err != nil {
		return fmt.Errorf("xds trust bundles: %w", err)
	}
	s.m.updates.WithLabelValues(keyEnvoySDS).Add(float64(len(set) + len(del)))
	s.log.Info("trust bundles updated", "trust_domains", len(bundles), "secrets", len(set))
	return nil
}

// Run serves until ctx ends. xDS streams are accepted once the first import view has been
// planned: before that the server has nothing true to say, and a client that already has
// a configuration keeps it (static stability).
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	gopts := []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.MaxConcurrentStreams(1 << 16),
	}
	if s.opts.ServerTLS != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(s.opts.ServerTLS)))
	}
	gs := grpc.NewServer(gopts...)
	xs := serverv3.NewServer(ctx, s.mux, s.callbacks())
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, xs)
	clusterservice.RegisterClusterDiscoveryServiceServer(gs, xs)
	endpointservice.RegisterEndpointDiscoveryServiceServer(gs, xs)
	listenerservice.RegisterListenerDiscoveryServiceServer(gs, xs)
	routeservice.RegisterRouteDiscoveryServiceServer(gs, xs)
	secretservice.RegisterSecretDiscoveryServiceServer(gs, xs)

	serveErr := make(chan error, 1)
	go func() {
		select {
		case <-s.served:
		case <-ctx.Done():
			serveErr <- nil
			return
		}
		s.log.Info("xds serving", "addr", s.Addr(), "local_cluster", s.cluster)
		serveErr <- gs.Serve(s.ln)
	}()
	defer func() {
		gs.Stop() // streams are long-lived: a graceful stop would wait for clients to leave
		_ = s.ln.Close()
	}()

	hcCh := s.hc.Subscribe()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var keys map[string]bool
		select {
		case <-ctx.Done():
			return nil
		case err := <-serveErr:
			if err != nil {
				return fmt.Errorf("xds serve: %w", err)
			}
			return nil
		case v, ok := <-s.views:
			if !ok {
				// The producer is gone: keep serving the last plan (static stability).
				s.views = nil
				s.log.Warn("import view channel closed: serving the last plan from now on")
				continue
			}
		drain:
			for s.views != nil {
				select {
				case nv, ok := <-s.views:
					if !ok {
						s.views = nil
						break drain
					}
					if nv != nil {
						v = mergeViews(v, nv)
					}
				default:
					break drain
				}
			}
			if v == nil || v.Revision == 0 {
				// Revision 0 is a federation service's placeholder before its first etcd
				// list: planning it would tell clients that nothing is imported.
				continue
			}
			keys = s.onView(v)
		case <-hcCh:
			keys = s.onHealth()
		case <-timer.C:
			keys = s.onTimer(time.Now())
		}
		if s.view != nil {
			s.replan(time.Now(), keys)
			s.servedOne.Do(func() { s.ready.Store(true); close(s.served) })
		}
		timer.Reset(s.nextWake())
	}
}

// onView diffs the new view against the last one and returns the services to re-plan.
// It is proportional to the number of services only through pointer comparisons: a
// merger that keeps unchanged *view.Service values makes it cheap.
func (s *Server) onView(v *view.View) map[string]bool {
	old := s.view
	s.view = v
	keys := map[string]bool{}
	all := old == nil
	if old != nil {
		if v.Changed != nil {
			// The producer says which services may have changed: look at those only.
			for _, k := range v.Changed {
				if !sameService(old.Services[k], v.Services[k]) {
					keys[k] = true
				}
			}
		} else {
			// One lookup per service (the only part of a pass that grows with the number
			// of services); removals are looked for only when the counts say so.
			added := 0
			for k, sv := range v.Services {
				o, ok := old.Services[k]
				switch {
				case !ok:
					added++
					keys[k] = true
				case o != sv && !sameService(o, sv):
					keys[k] = true
				}
			}
			if len(old.Services) != len(v.Services)-added {
				for k := range old.Services {
					if _, ok := v.Services[k]; !ok {
						keys[k] = true
					}
				}
			}
		}
		for name := range union(old.Clusters, v.Clusters) {
			if !sameCluster(old.Clusters[name], v.Clusters[name]) {
				if name == s.cluster {
					all = true // this cluster's region orders every service
				}
				s.markCluster(name, keys)
			}
		}
		for k := range union(old.Policies, v.Policies) {
			if !samePolicy(old.Policies[k], v.Policies[k]) {
				keys[k] = true
			}
		}
		for _, d := range drillDiff(old.Drills, v.Drills) {
			if d.Service != "" {
				keys[view.Key(d.Namespace, d.Service)] = true
			} else {
				s.markCluster(d.Cluster, keys)
			}
		}
	}
	if all {
		for k := range v.Services {
			keys[k] = true
		}
		for k := range s.svcs {
			keys[k] = true
		}
	}
	s.updateTargets(v)
	return keys
}

func (s *Server) markCluster(name string, keys map[string]bool) {
	for k := range s.byCluster[name] {
		keys[k] = true
	}
}

// updateTargets points the health checker at every other cluster's gateways.
func (s *Server) updateTargets(v *view.View) {
	t := map[string][]string{}
	for name, c := range v.Clusters {
		if name != s.cluster && c != nil && len(c.Gateways) > 0 {
			t[name] = c.Gateways
		}
	}
	same := len(t) == len(s.targets)
	if same {
		for n, g := range t {
			if !slices.Equal(g, s.targets[n]) {
				same = false
				break
			}
		}
	}
	if same {
		return
	}
	for n, gws := range t {
		for _, g := range gws {
			k := health.Target{Cluster: n, Addr: g}
			if _, ok := s.usable[k]; !ok {
				s.usable[k] = s.hc.State(n, g).Usable()
			}
		}
	}
	for k := range s.usable {
		if !slices.Contains(t[k.Cluster], k.Addr) {
			delete(s.usable, k)
		}
	}
	s.targets = t
	s.hc.SetTargets(t)
}

// onHealth returns the services of clusters whose usable gateway set changed.
func (s *Server) onHealth() map[string]bool {
	keys := map[string]bool{}
	changed := map[string]bool{}
	for k, was := range s.usable {
		if now := s.hc.State(k.Cluster, k.Addr).Usable(); now != was {
			s.usable[k] = now
			changed[k.Cluster] = true
		}
	}
	for c := range changed {
		s.markCluster(c, keys)
	}
	return keys
}

func (s *Server) onTimer(now time.Time) map[string]bool {
	keys := map[string]bool{}
	for s.wakes.Len() > 0 && !s.wakes[0].at.After(now) {
		w := heap.Pop(&s.wakes).(wake)
		if st := s.svcs[w.key]; st != nil && st.wakeAt.Equal(w.at) {
			keys[w.key] = true
		}
	}
	return keys
}

func (s *Server) nextWake() time.Duration {
	for s.wakes.Len() > 0 {
		w := s.wakes[0]
		if st := s.svcs[w.key]; st == nil || !st.wakeAt.Equal(w.at) {
			heap.Pop(&s.wakes) // superseded
			continue
		}
		d := time.Until(w.at)
		if d < time.Millisecond {
			d = time.Millisecond
		}
		return d
	}
	return time.Hour
}

// batch collects cache changes of one pass, applied cache by cache.
type batch map[string]*cacheOps

type cacheOps struct {
	set map[string]types.Resource
	del []string
}

func (b batch) set(cache, name string, r types.Resource) {
	o := b.ops(cache)
	o.set[name] = r
}

func (b batch) del(cache, name string) {
	o := b.ops(cache)
	delete(o.set, name)
	o.del = append(o.del, name)
}

func (b batch) ops(cache string) *cacheOps {
	o := b[cache]
	if o == nil {
		o = &cacheOps{set: map[string]types.Resource{}}
		b[cache] = o
	}
	return o
}

func (s *Server) dropService(key string, st *svcState, b batch) {
	ns, name, _ := strings.Cut(key, "/")
	for _, p := range st.ports {
		cn := names.ClusterName(ns, name, p)
		ln := names.ListenerName(ns, name, p)
		b.del(keyEDS, cn)
		b.del(keyGRPCCDS, cn)
		b.del(keyEnvoyCDS, cn)
		b.del(keyGRPCLDS, ln)
		b.del(keyGRPCRDS, ln)
	}
	for _, p := range st.inbound {
		cn := names.InboundClusterName(ns, name, p, s.opts.Domain)
		b.del(keyGwCDS, cn)
		b.del(keyGwEDS, cn)
	}
	for _, c := range st.clusters {
		delete(s.byCluster[c], key)
	}
	delete(s.svcs, key)
	delete(s.panicking, key)
	s.stab.Forget(key)
	s.debugMu.Lock()
	delete(s.debug, key)
	s.debugMu.Unlock()
	s.log.Info("service no longer imported", "service", key)
}

// index keeps cluster → services up to date for the service.
func (s *Server) index(key string, st *svcState, svc *view.Service) {
	cl := make([]string, 0, len(svc.Clusters))
	for _, ce := range svc.Clusters {
		cl = append(cl, ce.Cluster)
	}
	if slices.Equal(cl, st.clusters) {
		return
	}
	for _, c := range st.clusters {
		delete(s.byCluster[c], key)
	}
	for _, c := range cl {
		m := s.byCluster[c]
		if m == nil {
			m = make(map[string]bool, s.indexHint)
			s.byCluster[c] = m
		}
		m[key] = true
	}
	st.clusters = cl
}

func (s *Server) trustDomains(svc *view.Service) []string {
	var tds []string
	for _, ce := range svc.Clusters {
		if rec := s.view.Clusters[ce.Cluster]; rec != nil && rec.TrustDomain != "" && !slices.Contains(tds, rec.TrustDomain) {
			tds = append(tds, rec.TrustDomain)
		}
	}
	sort.Strings(tds)
	return tds
}

func (s *Server) callbacks() serverv3.Callbacks {
	open := func(proto string) func(context.Context, int64, string) error {
		return func(context.Context, int64, string) error { return nil }
	}
	first := func(id int64, node *corev3.Node, proto string) string {
		s.streamsMu.Lock()
		defer s.streamsMu.Unlock()
		if c, ok := s.streams[id]; ok {
			return c
		}
		c := classOf(node)
		s.streams[id] = c
		s.m.streams.WithLabelValues(c, proto).Inc()
		s.log.Info("xds client connected", "stream", id, "class", c, "protocol", proto,
			"node", node.GetId(), "node_cluster", node.GetCluster(), "user_agent", node.GetUserAgentName()+" "+node.GetUserAgentVersion())
		return c
	}
	closed := func(proto string) func(int64, *corev3.Node) {
		return func(id int64, node *corev3.Node) {
			s.streamsMu.Lock()
			c, ok := s.streams[id]
			delete(s.streams, id)
			s.streamsMu.Unlock()
			if ok {
				s.m.streams.WithLabelValues(c, proto).Dec()
				s.log.Info("xds client disconnected", "stream", id, "class", c, "node", node.GetId())
			}
		}
	}
	nack := func(class, typeURL, node string, detail string) {
		s.m.nacks.WithLabelValues(class, shortType(typeURL)).Inc()
		s.log.Warn("xds client rejected a response", "class", class, "node", node, "type", shortType(typeURL), "error", detail)
	}
	return serverv3.CallbackFuncs{
		StreamOpenFunc:        open("sotw"),
		StreamClosedFunc:      closed("sotw"),
		DeltaStreamOpenFunc:   open("delta"),
		DeltaStreamClosedFunc: closed("delta"),
		StreamRequestFunc: func(id int64, r *discoverygrpc.DiscoveryRequest) error {
			c := first(id, r.GetNode(), "sotw")
			if r.GetErrorDetail() != nil {
				nack(c, r.GetTypeUrl(), r.GetNode().GetId(), r.GetErrorDetail().GetMessage())
			}
			return nil
		},
		StreamResponseFunc: func(_ context.Context, _ int64, _ *discoverygrpc.DiscoveryRequest, resp *discoverygrpc.DiscoveryResponse) {
			s.m.responses.WithLabelValues(shortType(resp.GetTypeUrl())).Inc()
		},
		StreamDeltaRequestFunc: func(id int64, r *discoverygrpc.DeltaDiscoveryRequest) error {
			c := first(id, r.GetNode(), "delta")
			if r.GetErrorDetail() != nil {
				nack(c, r.GetTypeUrl(), r.GetNode().GetId(), r.GetErrorDetail().GetMessage())
			}
			return nil
		},
		StreamDeltaResponseFunc: func(_ int64, _ *discoverygrpc.DeltaDiscoveryRequest, resp *discoverygrpc.DeltaDiscoveryResponse) {
			s.m.responses.WithLabelValues(shortType(resp.GetTypeUrl())).Inc()
		},
	}
}

// Plans returns the plans being served, by "namespace/name" (for /debug pages and tests).
func (s *Server) Plans() map[string]planner.ServicePlan {
	s.debugMu.Lock()
	defer s.debugMu.Unlock()
	out := make(map[string]planner.ServicePlan, len(s.debug))
	for k, v := range s.debug {
		out[k] = v
	}
	return out
}

// wake is a re-plan due at a time.
type wake struct {
	at  time.Time
	key string
}

type wakeHeap []wake

func (h wakeHeap) Len() int           { return len(h) }
func (h wakeHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h wakeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *wakeHeap) Push(x any)        { *h = append(*h, x.(wake)) }
func (h *wakeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
